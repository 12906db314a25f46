from cioguard.sandbox.server import main

main()
