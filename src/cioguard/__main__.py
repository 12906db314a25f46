from cioguard.cli import main

main()
