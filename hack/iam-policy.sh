#!/usr/bin/env bash
# Prints deploy/iam/<file> for one partition and account: the files are written for the
# commercial partition (`arn:aws:`) with the placeholder ACCOUNT_ID; China (aws-cn) and
# GovCloud (aws-us-gov) need their own partition in every ARN.
#   hack/iam-policy.sh [--partition aws|aws-cn|aws-us-gov] [--account 123456789012] [file]
set -euo pipefail
cd "$(dirname "$0")/.."
partition=aws account=ACCOUNT_ID file=operator-policy.json
while [[ $# -gt 0 ]]; do
  case "$1" in
    --partition) partition="$2"; shift 2 ;;
    --account) account="$2"; shift 2 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) file="$1"; shift ;;
  esac
done
case "$partition" in
  aws|aws-cn|aws-us-gov) ;;
  *) echo "iam-policy: unknown partition '$partition' (aws, aws-cn or aws-us-gov)" >&2; exit 2 ;;
esac
if [[ "$account" != ACCOUNT_ID && ! "$account" =~ ^[0-9]{12}$ ]]; then
  echo "iam-policy: --account must be 12 digits, got '$account'" >&2; exit 2
fi
sed -e "s/\"arn:aws:/\"arn:${partition}:/g" -e "s/ACCOUNT_ID/${account}/g" "deploy/iam/${file}"
