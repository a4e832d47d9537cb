"""Helpers more than one plane uses: the platform's labels, Helm releases from pinned charts, Secrets from Pulumi
secret config, IAM policy documents and Pod Identity roles, and private S3 buckets. They import nothing else of
components/."""
