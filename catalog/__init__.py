"""Facts from outside the project, each with its source and the date it was checked: GPUs, EC2 instance types and
prices, model architectures, pinned chart and image versions, and the options each serving engine accepts.
Nothing here imports the stack configuration or the planning logic; both read from here."""
