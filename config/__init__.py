"""Typed stack configuration: `load()` inside a Pulumi program, `load_stack_file()` offline."""

from config.errors import ConfigError, Problem
from config.loader import KEYS, PROJECT, SECRET_KEYS, load, load_stack_file, parse, read_stack_file, secret
from config.schema import Cluster, GpuPool, ModelDeployment, StackConfig, SystemNodeGroup

__all__ = [
    "KEYS", "PROJECT", "SECRET_KEYS", "Cluster", "ConfigError", "GpuPool", "ModelDeployment", "Problem",
    "StackConfig", "SystemNodeGroup", "load", "load_stack_file", "parse", "read_stack_file", "secret",
]
