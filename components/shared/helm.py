"""Helm releases from the pinned charts in catalog/versions.py.

`helm.v3.Release` rather than `helm.v4.Chart`: a Release is an ordinary resource whose chart, version and values
show up in `pulumi preview`, in tests and in `llmctl plan`; v4 Charts are remote components that render nothing
under mocks."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from catalog.versions import Chart


def release(resource_name: str, chart: Chart, *, release_name: str, namespace: str, values: dict | None = None,
            skip_crds: bool = False, opts: pulumi.ResourceOptions | None = None) -> k8s.helm.v3.Release:
    return k8s.helm.v3.Release(
        resource_name,
        name=release_name,
        chart=chart.reference,
        version=chart.version,
        repository_opts=None if chart.is_oci else k8s.helm.v3.RepositoryOptsArgs(repo=chart.repository),
        namespace=namespace,
        values=values,
        skip_crds=skip_crds,
        opts=opts,
    )
