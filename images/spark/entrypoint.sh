#!/usr/bin/env bash
# Entry point of the batchrl Spark image, in the contract Spark on Kubernetes expects of an image:
#   driver ARGS...  spark-submit in client mode inside the driver pod (ARGS come from the submission)
#   executor        the executor backend, configured by the SPARK_* variables Spark puts on the pod
#   anything else   run as given (e.g. `python`, `batchrl --help`)
# Every process runs under tini so signals reach it and zombies are reaped.
set -euo pipefail

tini="${BATCHRL_TINI:-/usr/bin/tini}"
classpath="${SPARK_CONF_DIR:-${SPARK_HOME}/conf}"
if [[ -n "${HADOOP_CONF_DIR:-}" ]]; then
  classpath="${classpath}:${HADOOP_CONF_DIR}"
fi
classpath="${classpath}:${SPARK_HOME}/jars/*"
if [[ -n "${SPARK_EXTRA_CLASSPATH:-}" ]]; then
  classpath="${classpath}:${SPARK_EXTRA_CLASSPATH}"
fi

case "${1:-}" in
  driver)
    shift
    exec "${tini}" -s -- "${SPARK_HOME}/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift
    # Spark passes the executor's JVM options as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... (in order).
    java_opts=()
    while IFS= read -r index; do
      name="SPARK_JAVA_OPT_${index}"
      java_opts+=("${!name}")
    done < <(compgen -e | sed -n 's/^SPARK_JAVA_OPT_\([0-9][0-9]*\)$/\1/p' | sort -n)
    exec "${tini}" -s -- "${JAVA_HOME}/bin/java" "${java_opts[@]}" \
      "-Xms${SPARK_EXECUTOR_MEMORY}" "-Xmx${SPARK_EXECUTOR_MEMORY}" \
      -cp "${classpath}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL}" \
      --executor-id "${SPARK_EXECUTOR_ID}" \
      --cores "${SPARK_EXECUTOR_CORES}" \
      --app-id "${SPARK_APPLICATION_ID}" \
      --hostname "${SPARK_EXECUTOR_POD_IP}" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" \
      --podName "${SPARK_EXECUTOR_POD_NAME}"
    ;;
  *)
    exec "${tini}" -s -- "$@"
    ;;
esac
