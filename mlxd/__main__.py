"""``python -m mlxd`` runs the command line."""

from mlxd.cli.app import main

if __name__ == "__main__":
    main()
