#!/usr/bin/env bash
# Training text for the default model, from public-domain English texts in Debian packages (README.md here lists
# them with their licenses). Downloads the .debs with `apt-get download` (nothing is installed), unpacks them with
# dpkg-deb, and runs extract_texts.py (Python standard library only). Writes:
#   build/default_model_data/{train,val}.txt.xz, sources.json   what the GPU machine needs (carry this folder)
#   build/default_model_text/{train,val}.txt                      the same text, uncompressed, to read
# Usage: bash scripts/default_model/prepare_data.sh [SEED]   (needs apt-get, dpkg-deb, python3 and xz)
set -euo pipefail
cd "$(dirname "$0")/../.."
SEED=${1:-1234}
PACKAGES=(
  sword-text-web=426.0-1          # World English Bible (public domain)
  sword-comm-mhcc=2.0-1           # Matthew Henry's Concise Commentary (public domain)
  sword-comm-scofield=2.1-1       # Scofield Reference Notes, 1917 edition (public domain)
  sword-comm-tdavid=2.1-1         # C. H. Spurgeon, The Treasury of David (public domain)
  dict-devil=1.0-13.1             # Ambrose Bierce, The Devil's Dictionary (public domain)
  jargon-text=4.4.7-4.1           # The Jargon File 4.4.7 (public domain)
  r-cran-janeaustenr=1.0.0-1      # Jane Austen's six novels (texts public domain; package MIT)
  r-cran-tokenizers=0.3.0-1       # Moby Dick (text public domain; package MIT)
  r-cran-tidytext=0.4.1-1         # Great Expectations, The War of the Worlds, 20,000 Leagues (public domain; MIT)
)
WORK=build/default_model_debs
TEXT=build/default_model_text
DATA=build/default_model_data
rm -rf "$WORK" "$TEXT" "$DATA"
mkdir -p "$WORK/unpacked" "$TEXT" "$DATA"
if ! (cd "$WORK" && apt-get download "${PACKAGES[@]}"); then
  echo "apt-get download failed: run 'apt-get update' first; if a pinned version is gone from the archive," >&2
  echo "edit PACKAGES in $0 (the extracted text, and so the model, may then differ)" >&2
  exit 1
fi
for deb in "$WORK"/*.deb; do
  name=$(basename "$deb"); name=${name%%_*}
  dpkg-deb -x "$deb" "$WORK/unpacked/$name"
done
(cd "$WORK" && sha256sum ./*.deb) > "$DATA/debs.sha256"
python3 scripts/default_model/extract_texts.py "$WORK/unpacked" "$TEXT" --seed "$SEED"
mv "$TEXT/sources.json" "$DATA/sources.json"
for split in train val; do
  xz -9 -T1 -c "$TEXT/$split.txt" > "$DATA/$split.txt.xz" # single-threaded: the same bytes every time
done
echo "--- $DATA"
(cd "$DATA" && ls -l && sha256sum train.txt.xz val.txt.xz)
