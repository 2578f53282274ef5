// The CRC-32 of a file as Python's zlib computes it: an independent reference for ours.
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>

namespace hydra::test {

inline unsigned long long zlib_crc32_of_file(const std::string& path) {
  const std::string command =
      "/usr/bin/python3 -c 'import sys, zlib; print(zlib.crc32(open(sys.argv[1], \"rb\").read()))' " + path;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot run: " + command);
  unsigned long long crc = 0;
  const int got = std::fscanf(pipe, "%llu", &crc);
  ::pclose(pipe);
  if (got != 1) throw std::runtime_error("no CRC from: " + command);
  return crc;
}

}  // namespace hydra::test
