"""virt-debug: run QEMU under a debugger where libvirt or KubeVirt starts it."""

__version__ = "0.1.0"
