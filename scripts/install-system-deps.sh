#!/usr/bin/env bash
# Installs the Debian packages the service needs when they are missing.
#   runtime: WeasyPrint's shared libraries (Pango, HarfBuzz subsetting) and the statement fonts:
#            Inter (Latin, Greek, Cyrillic; tabular figures), DejaVu Sans (Arabic, Hebrew and
#            the rest of its wide coverage) and WenQuanYi Micro Hei (Chinese, Japanese, Korean),
#            the stack templates/assets/statement.css names, so no org name prints as empty boxes
#   test:    poppler-utils too, to rasterise and read PDFs in tests, and Debian's chromium for the
#            console's browser tests (Playwright drives /usr/bin/chromium; no browser download)
set -euo pipefail
want=(libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core fonts-inter fonts-wqy-microhei)
[[ "${1:-runtime}" == "test" ]] && want+=(poppler-utils chromium)

missing=()
for package in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${missing[*]} (install them with your package manager)" >&2
  exit 1
fi
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
echo "installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
