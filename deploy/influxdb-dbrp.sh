#!/bin/sh
# Map InfluxQL database "phoenix" (what the dashboards query) to the bucket.
set -e
bucket_id=$(influx bucket list --name "${DOCKER_INFLUXDB_INIT_BUCKET}" --hide-headers | cut -f1)
influx v1 dbrp create --db phoenix --rp autogen --bucket-id "${bucket_id}" --default
