# Shared by scripts/demo and scripts/check: find Python >= 3.11 and make ./.venv with mlxd in it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() {  # one line of progress, so a first run never sits silent
  printf '==> %s\n' "$*" >&2
}

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "mlxd needs Python 3.11 or newer (on a Mac: brew install python@3.12)" >&2
  return 1
}

ensure_venv() {  # $1: the extra to install, e.g. "" or "[dev]"
  local python stamp want
  python=$(find_python)
  if [ ! -x .venv/bin/python ]; then
    step "creating ./.venv with $("$python" --version)"
    "$python" -m venv .venv
  fi
  # Reinstall only when pyproject.toml changed (the dev install covers the plain one):
  # a second run starts in a second.
  stamp=.venv/.mlxd-installed
  sum=$(cksum < pyproject.toml)
  case "$(cat "$stamp" 2>/dev/null)" in
    "$1 $sum" | "[dev] $sum") return 0 ;;
  esac
  step "installing mlxd$1 and its dependencies into ./.venv (about a minute the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".$1"
  printf '%s' "$1 $sum" > "$stamp"
}
