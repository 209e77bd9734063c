"""`python -m runner` is the `mixspec` command."""

from runner.cli import main

if __name__ == "__main__":
    main()
