"""The local libvirt backend: trace one start of a domain on this machine.

* ``connection``: open libvirt (one-line errors saying how to start a daemon), the
  default emulator from capabilities, where libvirt keeps a domain's QEMU log.
* ``domain``: find the domain (by name or from a file), save and restore its
  persistent definition, undo what a killed run left.
* ``hook``: apply the onDefineDomain hook as virt-launcher does (define, read back,
  hook again, define).
* ``session``: the run itself, phase by phase (``run(conn, target, options)``).
* ``collect`` and ``summary``: what the run leaves and the first summary of it.
* ``daemon``: a private session-mode libvirtd as uid 107, as virt-launcher runs it
  (used by the demo when run as root, by the tests and by the benchmark).
"""
