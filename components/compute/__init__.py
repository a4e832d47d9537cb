"""Compute: the VPC and EKS cluster (`cluster`), Karpenter (`karpenter`), one GPU node pool per `gpuPools` entry
(`gpu_node_pool`) and the NVIDIA device plugin. The bottom plane: it imports only components/shared."""
