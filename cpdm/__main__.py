"""``python -m cpdm``: the same as the ``cpdm`` command."""

from cpdm.cli import main

if __name__ == "__main__":
    main()
