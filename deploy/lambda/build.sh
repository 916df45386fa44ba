#!/usr/bin/env bash
# Build the Lambda bundle for deploy/telemax-lambda.yaml (CodeUri: ../build/lambda/):
# build/lambda/ holds the consumer package and its dependencies at the versions pinned in
# constraints.txt, as binary wheels for Lambda's python3.11 runtime. Nothing is compiled.
#
#   deploy/lambda/build.sh              # x86_64 (the template's Architectures)
#   ARCH=arm64 deploy/lambda/build.sh   # then set Architectures: [arm64] in the template
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
case "${ARCH:-x86_64}" in
  x86_64) platform=manylinux2014_x86_64 ;;
  arm64) platform=manylinux2014_aarch64 ;;
  *) echo "ARCH must be x86_64 or arm64" >&2; exit 2 ;;
esac

out=build/lambda
dist=build/lambda-dist
rm -rf "$out" "$dist"
mkdir -p "$out" "$dist"
export PIP_ROOT_USER_ACTION=ignore
pip=("$PYTHON" -m pip --disable-pip-version-check --no-cache-dir)
# Our own code as a wheel first: --platform installs accept wheels only.
"${pip[@]}" wheel --quiet --no-deps --wheel-dir "$dist" .
"${pip[@]}" install --quiet --no-warn-conflicts --target "$out" -c constraints.txt \
  --platform "$platform" --implementation cp --python-version 3.11 --only-binary=:all: \
  "$dist"/telemax-*.whl
rm -rf "$dist"
echo "built $out ($(du -sh "$out" | cut -f1)) for $platform; package and deploy:"
echo "  aws cloudformation package --template-file deploy/telemax-lambda.yaml --s3-bucket BUCKET --output-template-file build/telemax-lambda.packaged.yaml"
echo "  aws cloudformation deploy --template-file build/telemax-lambda.packaged.yaml --stack-name telemax-lambda --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND"
