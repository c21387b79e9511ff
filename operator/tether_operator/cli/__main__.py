"""`python -m tether_operator.cli ...`: the same as the `tether` console script."""

from tether_operator.cli.main import main

if __name__ == "__main__":
    main()
