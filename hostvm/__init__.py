"""Host side of pymachine: machines, drivers, images, SSH, forwarding, the host agent and the façade."""
