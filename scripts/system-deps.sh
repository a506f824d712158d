#!/usr/bin/env bash
# Install the Debian/Ubuntu packages imgcls needs outside Python, when they are missing:
#   font     a CJK font, so class names such as 向日葵 render in the report's plots (not as boxes)
#   browser  Chromium, for the tests that open report.html in a real headless browser
#   git-lfs  for the tests that push weights to a git remote through git-lfs
# Usage: bash scripts/system-deps.sh font [browser] [git-lfs]
set -euo pipefail
want=()
for what in "$@"; do
    case "$what" in
        font)
            compgen -G "/usr/share/fonts/truetype/wqy/*.tt?" >/dev/null \
                || compgen -G "/usr/share/fonts/opentype/noto/*CJK*" >/dev/null || want+=(fonts-wqy-microhei) ;;
        browser)
            command -v chromium >/dev/null 2>&1 || want+=(chromium) ;;
        git-lfs)
            command -v git-lfs >/dev/null 2>&1 || want+=(git-lfs) ;;
        *) echo "system-deps.sh: unknown part '$what' (font, browser, git-lfs)" >&2; exit 2 ;;
    esac
done
[ ${#want[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "imgcls setup: please install ${want[*]} with your system's package manager" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "imgcls setup: not root and no sudo; install ${want[*]} yourself (apt-get install ${want[*]})" >&2
        exit 0
    fi
fi
echo "imgcls setup: installing ${want[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
