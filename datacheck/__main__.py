from datacheck.cli import main

main()
