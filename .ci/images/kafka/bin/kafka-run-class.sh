#!/usr/bin/env bash
# kafka-run-class.sh CLASS ARGS: java with /opt/kafka/libs, the same variables as Kafka's script
exec java ${KAFKA_HEAP_OPTS:--Xmx256M} \
    ${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true} \
    ${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=/opt/kafka/config/tools-log4j2.properties} \
    ${KAFKA_OPTS:-} -cp "/opt/kafka/libs/*" "$@"
