"""Observability: what the platform records about itself. The monitoring stack (`monitoring`: kube-prometheus-stack,
DCGM exporter, monitors, rules, Alertmanager routing), every PromQL expression (`signals`: recording rules, alerts,
the KEDA scalers' queries), the Grafana dashboards (`dashboards`) and the audit logs (`audit_logs`: VPC flow logs,
S3 access logs). It watches compute and serving, so it may read their names; the other planes read it only through
`signals`."""
