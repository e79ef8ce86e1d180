"""``python -m synthkit`` (and ``torchrun -m synthkit train ...``)."""

from synthkit.cli.app import main

if __name__ == "__main__":
    main()
