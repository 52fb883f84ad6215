"""Entry point for ``python -m charrnn``."""

from charrnn.cli import main

if __name__ == "__main__":
    main(prog_name="charrnn")
