# Runs CMD (a ;-list) and fails unless it exits with CODE and its output matches PATTERN.
# Used for behaviour that is a process exit: config errors (2), timeouts (4), ...
execute_process(COMMAND ${CMD} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(NOT "${rc}" STREQUAL "${CODE}")
  message(FATAL_ERROR "expected exit code ${CODE}, got ${rc}")
endif()
if(NOT "${out}${err}" MATCHES "${PATTERN}")
  message(FATAL_ERROR "output does not match '${PATTERN}'")
endif()
