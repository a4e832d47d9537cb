"""Edge: the AWS Load Balancer Controller and the gateway's Ingress (an ALB, HTTPS only).

The controller's IAM policy is the upstream one narrowed to this cluster: every load balancer, target group and
security group it changes or deletes must carry the tag `elbv2.k8s.aws/cluster: <cluster name>`, which it sets
on what it creates. The Ingress routes only the client routes (chat completions, completions, models) and two
health paths, never `/metrics`, LiteLLM's admin routes or its other APIs; those stay inside the cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from catalog import versions
from components.compute.cluster import SYSTEM_NODE_LABEL
from components.edge.gateway import CLIENT_PATHS, HEALTH_PATHS, PORT
from components.edge.gateway import NAME as GATEWAY_NAME
from components.edge.gateway import NAMESPACE as GATEWAY_NAMESPACE
from components.shared import helm
from components.shared.iam import pod_identity_role
from components.shared.labels import PLATFORM_LABELS
from config.schema import GatewayIngress

CONTROLLER_NAMESPACE = "kube-system"
CONTROLLER_SERVICE_ACCOUNT = "aws-load-balancer-controller"
CLUSTER_TAG = "elbv2.k8s.aws/cluster"
# TLS 1.3 and 1.2 only, forward-secret ciphers. Source: docs.aws.amazon.com/elasticloadbalancing/latest/
# application/describe-ssl-policies.html (the policy AWS recommends), checked 2026-11-24.
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
STICKY_SECONDS = 3600


def controller_policy(cluster_name: str) -> dict:
    """What the controller needs, after the upstream iam_policy.json (v3.5.0), with every tag condition bound to
    this cluster's name instead of "any cluster"."""
    own = {"StringEquals": {f"aws:ResourceTag/{CLUSTER_TAG}": cluster_name}}
    tagging_new = {"StringEquals": {f"aws:RequestTag/{CLUSTER_TAG}": cluster_name}}
    lb_arns = ["arn:aws:elasticloadbalancing:*:*:targetgroup/*/*", "arn:aws:elasticloadbalancing:*:*:loadbalancer/app/*/*",
               "arn:aws:elasticloadbalancing:*:*:loadbalancer/net/*/*"]
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ServiceLinkedRole", "Effect": "Allow", "Action": "iam:CreateServiceLinkedRole", "Resource": "*",
         "Condition": {"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}}},
        {"Sid": "Describe", "Effect": "Allow", "Resource": "*", "Action": [
            "ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
            "ec2:DescribeInternetGateways", "ec2:DescribeVpcs", "ec2:DescribeVpcPeeringConnections",
            "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeInstances",
            "ec2:DescribeNetworkInterfaces", "ec2:DescribeTags", "ec2:DescribeRouteTables",
            "ec2:DescribeIpamPools", "ec2:GetSecurityGroupsForVpc", "ec2:GetCoipPoolUsage", "ec2:DescribeCoipPools",
            "elasticloadbalancing:Describe*", "acm:ListCertificates", "acm:DescribeCertificate",
            "iam:ListServerCertificates", "iam:GetServerCertificate", "cognito-idp:DescribeUserPoolClient",
            "wafv2:GetWebACL", "wafv2:GetWebACLForResource", "waf-regional:GetWebACL",
            "waf-regional:GetWebACLForResource", "shield:GetSubscriptionState", "shield:DescribeProtection"]},
        {"Sid": "CreateSecurityGroup", "Effect": "Allow", "Action": "ec2:CreateSecurityGroup", "Resource": "*"},
        {"Sid": "TagNewSecurityGroup", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": "arn:aws:ec2:*:*:security-group/*",
         "Condition": {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup",
                                        f"aws:RequestTag/{CLUSTER_TAG}": cluster_name}}},
        {"Sid": "OwnSecurityGroups", "Effect": "Allow", "Resource": "*", "Condition": own, "Action": [
            "ec2:CreateTags", "ec2:DeleteTags", "ec2:AuthorizeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup"]},
        # The node security group's rule that admits the ALB: that group is EKS's, not tagged by the controller.
        {"Sid": "NodeSecurityGroupRules", "Effect": "Allow", "Resource": "*",
         "Condition": {"StringEquals": {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}},
         "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]},
        {"Sid": "CreateLoadBalancers", "Effect": "Allow", "Resource": "*", "Condition": tagging_new, "Action": [
            "elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"]},
        {"Sid": "TagNewLoadBalancers", "Effect": "Allow", "Action": "elasticloadbalancing:AddTags",
         "Resource": lb_arns, "Condition": {"StringEquals": {
             "elasticloadbalancing:CreateAction": ["CreateTargetGroup", "CreateLoadBalancer"],
             f"aws:RequestTag/{CLUSTER_TAG}": cluster_name}}},
        {"Sid": "OwnLoadBalancers", "Effect": "Allow", "Resource": "*", "Condition": own, "Action": [
            "elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags",
            "elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetIpAddressType",
            "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
            "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:ModifyTargetGroup",
            "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:DeleteTargetGroup",
            "elasticloadbalancing:ModifyListenerAttributes", "elasticloadbalancing:CreateListener",
            "elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"]},
        # Listeners and rules carry no tags of their own when created; their load balancer is checked above.
        {"Sid": "ListenersAndRules", "Effect": "Allow", "Resource": "*", "Action": [
            "elasticloadbalancing:DeleteListener", "elasticloadbalancing:CreateRule",
            "elasticloadbalancing:DeleteRule", "elasticloadbalancing:ModifyListener",
            "elasticloadbalancing:ModifyRule", "elasticloadbalancing:SetRulePriorities",
            "elasticloadbalancing:AddListenerCertificates", "elasticloadbalancing:RemoveListenerCertificates"]},
        {"Sid": "TagListenersAndRules", "Effect": "Allow", "Action": [
            "elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
         "Resource": ["arn:aws:elasticloadbalancing:*:*:listener/app/*/*/*",
                      "arn:aws:elasticloadbalancing:*:*:listener-rule/app/*/*/*"]},
    ]}


def controller_values(cluster_name: str, region: str, vpc_id: str, replicas: int, tags: dict[str, str]) -> dict:
    per_pod = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    return {
        "clusterName": cluster_name, "region": region, "vpcId": vpc_id,
        "replicaCount": replicas,
        "serviceAccount": {"create": True, "name": CONTROLLER_SERVICE_ACCOUNT},
        "nodeSelector": SYSTEM_NODE_LABEL,
        "resources": per_pod,
        "podDisruptionBudget": {"maxUnavailable": 1} if replicas > 1 else {},
        "defaultSSLPolicy": SSL_POLICY,
        "defaultTargetType": "ip",
        # Only Ingresses: LoadBalancer Services keep EKS's default behaviour.
        "enableServiceMutatorWebhook": False,
        "defaultTags": tags,
        "serviceMonitor": {"enabled": True, "interval": "30s"},
    }


def ingress_annotations(cfg: GatewayIngress, certificate_arn: str, timeout_seconds: int) -> dict[str, str]:
    target_group = ["deregistration_delay.timeout_seconds=30"]
    if cfg.sticky_sessions:
        target_group += ["stickiness.enabled=true", "stickiness.type=lb_cookie",
                         f"stickiness.lb_cookie.duration_seconds={STICKY_SECONDS}"]
    return {
        "alb.ingress.kubernetes.io/scheme": cfg.scheme,
        "alb.ingress.kubernetes.io/target-type": "ip",
        "alb.ingress.kubernetes.io/listen-ports": json.dumps([{"HTTP": 80}, {"HTTPS": 443}]),
        "alb.ingress.kubernetes.io/ssl-redirect": "443",
        "alb.ingress.kubernetes.io/certificate-arn": certificate_arn,
        "alb.ingress.kubernetes.io/ssl-policy": SSL_POLICY,
        "alb.ingress.kubernetes.io/inbound-cidrs": ",".join(cfg.allowed_cidrs),
        "alb.ingress.kubernetes.io/load-balancer-attributes": ",".join(load_balancer_attributes(timeout_seconds)),
        "alb.ingress.kubernetes.io/target-group-attributes": ",".join(target_group),
        "alb.ingress.kubernetes.io/healthcheck-path": HEALTH_PATHS[1],
        "alb.ingress.kubernetes.io/success-codes": "200",
    }


def load_balancer_attributes(timeout_seconds: int) -> list[str]:
    """- Generations stream for minutes: the idle timeout matches the gateway's request timeout.
    - The client's address is appended to X-Forwarded-For (the ALB's default, pinned): gateway_auth refuses the
      master key on any request that carries it, so the admin key never works from outside the cluster.
    - Headers that are not valid HTTP are dropped rather than passed to the proxy."""
    return [f"idle_timeout.timeout_seconds={timeout_seconds}", "routing.http.xff_header_processing.mode=append",
            "routing.http.drop_invalid_header_fields.enabled=true"]


def ingress_spec(cfg: GatewayIngress) -> dict:
    """Only the client routes and the two health paths; every other path gets the ALB's own 404 and never reaches
    the gateway. To open another route, add it to gateway.CLIENT_PATHS and to gateway_auth.CLIENT_ROUTES."""
    backend = {"service": {"name": GATEWAY_NAME, "port": {"number": PORT}}}
    paths = [{"path": path, "pathType": kind, "backend": backend} for path, kind in CLIENT_PATHS.items()]
    paths += [{"path": path, "pathType": "Exact", "backend": backend} for path in HEALTH_PATHS]
    rule = {"http": {"paths": paths}, **({"host": cfg.host} if cfg.host else {})}
    return {"ingressClassName": "alb", "rules": [rule]}


@dataclass(frozen=True)
class EdgeArgs:
    cluster_name: str
    cluster_name_output: pulumi.Input[str]
    region: str
    vpc_id: pulumi.Input[str]
    replicas: int
    tags: dict[str, str]
    ingress: GatewayIngress
    request_timeout_seconds: int
    depends_on: list[pulumi.Resource]
    """The system nodes, the Pod Identity agent, and the gateway's Service."""


class Edge(pulumi.ComponentResource):
    ingress: k8s.networking.v1.Ingress | None
    url: pulumi.Output[str] | None
    """The public (or VPC-internal) HTTPS base URL of the gateway, or None with the Ingress off."""

    def __init__(self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:Edge", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        identity = pod_identity_role(
            f"{name}-controller", cluster_name=args.cluster_name, cluster_name_output=args.cluster_name_output,
            namespace=CONTROLLER_NAMESPACE, service_account=CONTROLLER_SERVICE_ACCOUNT,
            policy=json.dumps(controller_policy(args.cluster_name)),
            description="AWS Load Balancer Controller (this cluster's load balancers only)", opts=child)
        release = helm.release(
            f"{name}-controller", versions.AWS_LOAD_BALANCER_CONTROLLER, release_name="aws-load-balancer-controller",
            namespace=CONTROLLER_NAMESPACE,
            values=pulumi.Output.from_input(args.vpc_id).apply(lambda vpc: controller_values(
                args.cluster_name, args.region, vpc, args.replicas, args.tags)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[identity.association, *args.depends_on]))
        self.ingress, self.url = None, None
        cfg = args.ingress
        if cfg.enabled:
            certificate_arn = self._certificate(name, cfg) if cfg.certificate_arn is None else cfg.certificate_arn
            self.ingress = k8s.networking.v1.Ingress(
                f"{name}-ingress",
                metadata={"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE,
                          "labels": {**PLATFORM_LABELS, "app.kubernetes.io/component": "gateway"},
                          "annotations": pulumi.Output.from_input(certificate_arn).apply(
                              lambda arn: ingress_annotations(cfg, arn, args.request_timeout_seconds))},
                spec=ingress_spec(cfg),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[release, *args.depends_on]))
            hostname = self.ingress.status.apply(lambda s: s.load_balancer.ingress[0].hostname)
            if cfg.route53_zone_id is not None:
                aws.route53.Record(f"{name}-dns", zone_id=cfg.route53_zone_id, name=cfg.host, type="CNAME", ttl=300,
                                   records=[hostname], opts=child)
            self.url = pulumi.Output.from_input(f"https://{cfg.host}") if cfg.host else \
                hostname.apply(lambda h: f"https://{h}")
        self.register_outputs({"url": self.url})

    def _certificate(self, name: str, cfg: GatewayIngress) -> pulumi.Output[str]:
        """An ACM certificate for `host`, validated by DNS records in the zone; the ARN once it is issued."""
        child = pulumi.ResourceOptions(parent=self)
        certificate = aws.acm.Certificate(f"{name}-certificate", domain_name=cfg.host, validation_method="DNS",
                                          opts=child)
        option = certificate.domain_validation_options[0]
        record = aws.route53.Record(f"{name}-certificate-validation", zone_id=cfg.route53_zone_id,
                                    name=option.resource_record_name, type=option.resource_record_type,
                                    records=[option.resource_record_value], ttl=300, allow_overwrite=True, opts=child)
        validation = aws.acm.CertificateValidation(f"{name}-certificate", certificate_arn=certificate.arn,
                                                   validation_record_fqdns=[record.fqdn], opts=child)
        return validation.certificate_arn
