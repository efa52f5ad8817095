from virt_debug.cli.main import main

main()
