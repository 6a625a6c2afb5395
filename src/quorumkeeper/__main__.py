from quorumkeeper.cli import main

main()
