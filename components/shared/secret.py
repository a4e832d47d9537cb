"""The one way the platform puts Pulumi secret config into the cluster: an Opaque Secret whose values stay secret
Outputs, so previews, the state's plain view and `llmctl plan` show them only as `[secret]`."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.shared.labels import PLATFORM_LABELS


def opaque_secret(resource_name: str, *, name: str, namespace: str, data: dict[str, pulumi.Input[str]],
                  opts: pulumi.ResourceOptions) -> k8s.core.v1.Secret:
    return k8s.core.v1.Secret(
        resource_name,
        metadata={"name": name, "namespace": namespace, "labels": PLATFORM_LABELS},
        type="Opaque",
        string_data={key: pulumi.Output.secret(value) for key, value in data.items()},
        opts=opts,
    )
