#include "launcher/option_values.h"

#include <climits>
#include <cmath>
#include <exception>
#include <string>

#include "common/errors.h"

namespace hydra::launcher {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t comma = text.find(','); comma != std::string::npos; comma = text.find(',', start)) {
    out.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  out.push_back(text.substr(start));
  return out;
}

std::optional<long long> whole_number(const std::string& text) {
  size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used != text.size() || text.find_first_of(" \t\n") != std::string::npos) return std::nullopt;
  return value;
}

std::vector<int64_t> positive_list(const std::string& option, const std::string& text, std::vector<int64_t> fallback) {
  if (text.empty()) return fallback;
  std::vector<int64_t> out;
  for (const std::string& item : split_list(text)) {
    const std::optional<long long> v = whole_number(item);
    if (!v || *v < 1) {
      HYDRA_FAIL(common::ConfigError, option << ": '" << item << "' in '" << text << "' is not a positive whole number");
    }
    out.push_back(*v);
  }
  return out;
}

int count_option(const std::string& option, const std::string& text, int fallback, int least) {
  if (text.empty()) return fallback;
  const std::optional<long long> value = whole_number(text);
  if (!value || *value < least || *value > INT32_MAX) {
    HYDRA_FAIL(common::ConfigError, option << " needs a whole number of at least " << least << ", got '" << text << "'");
  }
  return static_cast<int>(*value);
}

double real_option(const std::string& option, const std::string& text, double fallback, double least, double most) {
  if (text.empty()) return fallback;
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !std::isfinite(value) || value < least || value > most) {
    HYDRA_FAIL(common::ConfigError, option << " needs a number from " << least << " to " << most << ", got '" << text
                                           << "'");
  }
  return value;
}

}  // namespace hydra::launcher
