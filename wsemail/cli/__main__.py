from wsemail.cli import main

main()
