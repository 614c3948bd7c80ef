from fidfast.cli import main

main()
