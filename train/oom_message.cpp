#include "train/oom_message.h"

#include <cstdio>
#include <regex>

namespace hydra::train {
namespace {

// A size as LibTorch's allocator prints it: "20.00 MiB", "1.50 GiB", "512 bytes".
const char* const kSize = "([0-9]+(?:\\.[0-9]+)? (?:[KMGTP]iB|bytes))";

std::optional<std::string> first_group(const std::string& text, const std::string& pattern) {
  std::smatch match;
  if (!std::regex_search(text, match, std::regex(pattern))) return std::nullopt;
  return match[1].str();
}

bool holds_state_only(const std::string& phase) { return phase == "model build" || phase == "checkpoint load"; }

// What to lower when the activations do not fit, with this run's values (after "lower").
std::string lower_activations(const MemoryKnobs& knobs) {
  std::string out = "train.micro_batch (now " + std::to_string(knobs.micro_batch) + ") or train.seq_len (now " +
                    std::to_string(knobs.seq_len) + ")";
  // The modes that keep less than the current one, weakest first (model/recompute.h).
  const std::string& now = knobs.activation_checkpointing;
  const char* stronger = now == "none" ? "mlp, layer or block" : now == "mlp" ? "layer or block" : now == "layer" ? "block" : "";
  if (*stronger) {
    out += ", or set train.activation_checkpointing to " + std::string(stronger) + " (now " + now +
           "; hydra info prints the peak of each)";
  }
  return out;
}

}  // namespace

std::optional<std::string> oom_requested(const std::string& torch_message) {
  return first_group(torch_message, std::string("Tried to allocate ") + kSize);
}

std::optional<std::string> oom_free(const std::string& torch_message) {
  if (auto v = first_group(torch_message, std::string("of which ") + kSize + " is free")) return v;  // 2.x
  return first_group(torch_message, std::string(kSize) + " free");                                  // 1.x, 2.0
}

std::string out_of_memory_message(const RunPhase& phase, const MemoryKnobs& knobs, const std::string& torch_message) {
  std::string out = "out of memory in the " + phase.what;
  if (phase.step > 0) out += " of step " + std::to_string(phase.step);
  const auto asked = oom_requested(torch_message);
  const auto free = oom_free(torch_message);
  if (asked) out += ": tried to allocate " + *asked;
  if (free) out += std::string(asked ? "" : ":") + " with " + *free + " free";
  if (!asked && !free) out += " (" + torch_message.substr(0, torch_message.find('\n')) + ")";
  if (holds_state_only(phase.what)) {
    out += ". The weights and optimizer state do not fit: raise parallel.zero_stage (now " +
           std::to_string(knobs.zero_stage) + "), parallel.tp or parallel.pp, or use a device with more memory";
  } else {
    out += ". Lower " + lower_activations(knobs);
  }
  return out;
}

std::string predicted_memory_warning(double predicted_peak_bytes, double device_bytes, const MemoryKnobs& knobs) {
  // The estimate runs a few percent low (docs/PERF.md): above 95% of the device is a warning.
  if (device_bytes <= 0 || predicted_peak_bytes <= 0.95 * device_bytes) return "";
  char numbers[160];
  std::snprintf(numbers, sizeof numbers, "the predicted peak of %.1f GB per GPU is %.0f%% of this GPU's %.1f GB",
                predicted_peak_bytes / 1e9, 100.0 * predicted_peak_bytes / device_bytes, device_bytes / 1e9);
  return std::string(numbers) + ": the first step will likely run out of memory; lower " + lower_activations(knobs) +
         ", or raise parallel.zero_stage (now " + std::to_string(knobs.zero_stage) + "), parallel.tp or parallel.pp";
}

}  // namespace hydra::train
