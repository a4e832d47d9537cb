"""The labels every Kubernetes object of the platform carries, in one place."""

PLATFORM_LABELS = {"app.kubernetes.io/part-of": "llm-platform", "app.kubernetes.io/managed-by": "pulumi"}
