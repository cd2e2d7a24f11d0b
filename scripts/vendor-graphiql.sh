#!/usr/bin/env bash
# Re-creates skygraph/graphql/static/ (the GraphiQL page's assets, served by the analyzer so
# that GraphiQL works with no internet) from pinned npm packages, and audits the result.
#
#   scripts/vendor-graphiql.sh            fetch the pinned tarballs with `npm pack`, check each
#                                         tarball's sha512 against the integrity pinned below,
#                                         extract the files, check them against the committed
#                                         SHA256SUMS, and only then replace the vendored copy
#   scripts/vendor-graphiql.sh --verify   offline: check the vendored files against SHA256SUMS
#                                         (and that the directory holds nothing else)
#   scripts/vendor-graphiql.sh --update   after changing the pins below: like the default, but
#                                         (re)writes SHA256SUMS instead of checking it
#
# The vendored JS/CSS files are byte-identical to the ones in the npm tarballs (and so to
# https://unpkg.com/<pkg>@<version>/<path>); only the LICENSE.* files are named here.
# Source maps are not vendored: the browser asks for them only when DevTools is open.
# Needs npm (or set NPM_PACK_CMD), tar, openssl and sha256sum. NPM_CONFIG_REGISTRY picks a mirror.
# When bumping graphiql, keep @graphiql/plugin-explorer's peer @graphiql/react range in line with
# graphiql's own @graphiql/react dependency (`npm view <pkg>@<ver> dependencies peerDependencies`).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dest="$here/skygraph/graphql/static"

# npm spec | npm "dist.integrity" of the tarball
pins=(
  "react@18.2.0|sha512-/3IjMdb2L9QbBdWiW5e3P2/npwMBaU9mHCSCUzNln0ZCYbcfTsGbTJrU/kGemdH2IWmB2ioZ+zkxtmq6g09fGQ=="
  "react-dom@18.2.0|sha512-6IMTriUmvsjHUjNtEDudZfuDQUoWXVxKHhlEGSk81n4YFS+r/Kl99wXiwlVXtPBtJenozv2P+hxDsw9eA7Xo6g=="
  "graphiql@3.8.3|sha512-cuPDYtXVKV86Pu5PHBX642Odi/uVEE2y1Jxq5rGO/Qy1G2lRp7ZZ7a/T30RzxhuLSWo9zUbzq0P3U49//H0Ugw=="
  "@graphiql/plugin-explorer@3.2.5|sha512-gM9UwD0PcOHe+XrRY2YMIV4pUrDIfV0YBQ5kQUZxk0BuVvZO9xk06XFv5plBKDAwtxbsuq+nET4i9FJCiYev2g=="
  # only for its LICENSE: graphiql-explorer is bundled into the plugin's UMD file
  "graphiql-explorer@0.9.0|sha512-fZC/wsuatqiQDO2otchxriFO0LaWIo/ovF/CQJ1yOudmY0P7pzDiP+l9CEHUiWbizk3e99x6DQG4XG1VxA+d6A=="
)

# vendored name | npm package | path inside the tarball's package/ directory
files=(
  "react.production.min.js|react|umd/react.production.min.js"
  "react-dom.production.min.js|react-dom|umd/react-dom.production.min.js"
  "graphiql.min.js|graphiql|graphiql.min.js"
  "graphiql.min.css|graphiql|graphiql.min.css"
  "graphiql-plugin-explorer.umd.js|@graphiql/plugin-explorer|dist/index.umd.js"
  "graphiql-plugin-explorer.css|@graphiql/plugin-explorer|dist/style.css"
  "LICENSE.react|react|LICENSE"
  "LICENSE.react-dom|react-dom|LICENSE"
  "LICENSE.graphiql|graphiql|LICENSE"
)

mode=fetch
case "${1:-}" in
  "") ;;
  --verify) mode=verify ;;
  --update) mode=update ;;
  -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--verify|--update]" >&2; exit 2 ;;
esac

# Checks that $1 holds exactly the files listed in $1/SHA256SUMS (plus SHA256SUMS) and that they match.
verify_dir() {
  local dir=$1
  [ -f "$dir/SHA256SUMS" ] || { echo "vendor-graphiql: $dir/SHA256SUMS missing" >&2; return 1; }
  (cd "$dir" && sha256sum --quiet --strict -c SHA256SUMS) || return 1
  local listed actual
  listed=$( (awk '{print $2}' "$dir/SHA256SUMS"; echo SHA256SUMS) | sort)
  actual=$(cd "$dir" && find . -mindepth 1 -maxdepth 1 -printf '%f\n' | sort)
  if [ "$listed" != "$actual" ]; then
    echo "vendor-graphiql: $dir does not hold exactly the files of SHA256SUMS:" >&2
    diff <(echo "$listed") <(echo "$actual") >&2 || true
    return 1
  fi
}

if [ "$mode" = verify ]; then
  verify_dir "$dest"
  echo "vendor-graphiql: $dest matches SHA256SUMS"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tgz" "$tmp/pkg" "$tmp/out"

declare -A pkgdir
for pin in "${pins[@]}"; do
  spec=${pin%%|*}
  want=${pin#*|}
  name=${spec%@*}
  echo "vendor-graphiql: npm pack $spec"
  tgz=$(cd "$tmp/tgz" && ${NPM_PACK_CMD:-npm pack} --silent "$spec" 2>/dev/null | tail -n 1)
  [ -f "$tmp/tgz/$tgz" ] || { echo "vendor-graphiql: npm pack $spec failed" >&2; exit 1; }
  got="sha512-$(openssl dgst -sha512 -binary "$tmp/tgz/$tgz" | base64 -w0)"
  if [ "$got" != "$want" ]; then
    echo "vendor-graphiql: $spec: tarball integrity $got, pinned $want" >&2
    exit 1
  fi
  d="$tmp/pkg/${name//\//_}"
  mkdir -p "$d"
  tar -xzf "$tmp/tgz/$tgz" -C "$d"
  pkgdir[$name]="$d/package"
done

for f in "${files[@]}"; do
  IFS='|' read -r out name path <<<"$f"
  cp "${pkgdir[$name]}/$path" "$tmp/out/$out"
done

# @graphiql/plugin-explorer ships no LICENSE file (package.json: "license": "MIT"); it lives in the
# graphql/graphiql monorepo, and its UMD file bundles graphiql-explorer (MIT, OneGraph).
{
  echo "@graphiql/plugin-explorer (graphiql-plugin-explorer.umd.js, graphiql-plugin-explorer.css)"
  echo "is MIT-licensed (its package.json) and ships no LICENSE file. It is developed in the"
  echo "graphql/graphiql repository, whose LICENSE is:"
  echo
  cat "${pkgdir[graphiql]}/LICENSE"
  echo
  echo "graphiql-plugin-explorer.umd.js bundles graphiql-explorer 0.9.0, whose LICENSE is:"
  echo
  cat "${pkgdir[graphiql-explorer]}/LICENSE"
} >"$tmp/out/LICENSE.graphiql-plugin-explorer"

(cd "$tmp/out" && find . -mindepth 1 -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort \
  | xargs sha256sum) >"$tmp/SHA256SUMS.new"

if [ "$mode" = update ]; then
  cp "$tmp/SHA256SUMS.new" "$tmp/out/SHA256SUMS"
else
  [ -f "$dest/SHA256SUMS" ] || { echo "vendor-graphiql: no $dest/SHA256SUMS; use --update" >&2; exit 1; }
  cp "$dest/SHA256SUMS" "$tmp/out/SHA256SUMS"
  if ! verify_dir "$tmp/out"; then
    echo "vendor-graphiql: the fetched files do not match the committed SHA256SUMS" >&2
    exit 1
  fi
fi

rm -rf "$dest"
mkdir -p "$dest"
cp "$tmp/out/"* "$dest/"
verify_dir "$dest"
echo "vendor-graphiql: $dest updated ($(du -sh "$dest" | cut -f1))"
