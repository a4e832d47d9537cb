"""llmctl: offline tools for the llm-platform Pulumi program (no cloud credentials, no Pulumi CLI)."""
