from cioguard.cli.main import main

main()
