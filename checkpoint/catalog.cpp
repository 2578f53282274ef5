#include "checkpoint/catalog.h"

#include <ATen/ATen.h>

#include <cstring>
#include <sstream>

#include "checkpoint/h5_file.h"
#include "common/errors.h"

namespace hydra::checkpoint {
namespace {

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep)) out.push_back(item);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

std::vector<int64_t> ints(const std::string& s) {
  std::vector<int64_t> out;
  for (const auto& item : split(s, ',')) out.push_back(std::stoll(item));
  return out;
}

}  // namespace

std::string format_catalog(const std::vector<CatalogEntry>& entries) {
  std::string text;
  for (const auto& e : entries) {
    text += std::to_string(e.file) + "\t" + (e.optim ? "optim" : "model") + "\t" + e.name + "\t" + join(e.part.origin) +
            "\t" + join(e.part.shape) + "\t" + std::to_string(e.part.begin) + "\t" + std::to_string(e.part.end) + "\t" +
            join(e.global_shape) + "\n";
  }
  return text;
}

std::vector<CatalogEntry> parse_catalog(const std::string& text, const std::string& where) {
  std::vector<CatalogEntry> out;
  std::istringstream in(text);
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    const auto f = split(line, '\t');
    try {
      if (f.size() != 8 || (f[1] != "model" && f[1] != "optim")) throw std::invalid_argument("fields");
      CatalogEntry e;
      e.file = std::stoi(f[0]);
      e.optim = f[1] == "optim";
      e.name = f[2];
      e.part = {ints(f[3]), ints(f[4]), std::stoll(f[5]), std::stoll(f[6])};
      e.global_shape = ints(f[7]);
      if (e.part.origin.size() != e.part.shape.size() || e.global_shape.size() != e.part.shape.size()) {
        throw std::invalid_argument("ranks");
      }
      out.push_back(std::move(e));
    } catch (const std::exception&) {
      HYDRA_FAIL(common::InputError, where << ": /catalog line " << number << " is malformed: '" << line << "'");
    }
  }
  return out;
}

void write_catalog(H5File& file, const std::string& text) {
  at::Tensor bytes = at::empty({static_cast<int64_t>(text.size())}, at::TensorOptions().dtype(at::kByte));
  if (!text.empty()) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  file.write_tensor("/catalog", bytes);
}

std::string read_catalog(const H5File& file) {
  if (!file.exists("/catalog")) HYDRA_FAIL(common::InputError, file.path() << ": /catalog is missing");
  const at::Tensor bytes = file.read_tensor("/catalog");  // checksum verified
  if (bytes.numel() == 0) return "";
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
}

}  // namespace hydra::checkpoint
