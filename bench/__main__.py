"""``python -m bench`` runs the benchmark."""

from bench.cli import main

if __name__ == "__main__":
    main()
