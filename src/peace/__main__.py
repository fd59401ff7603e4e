"""``python -m peace``: the command line; also what ``torchrun ... -m peace pretrain`` starts."""

from peace.cli import main

if __name__ == "__main__":
    main()
