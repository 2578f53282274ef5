// Where `hydra data prepare` writes, handled so that nothing the user wrote is lost and a
// failed run leaves nothing behind (docs/DATA.md, "Output directory"):
//  - check_output() runs before any work: --output must be a new path, an empty directory,
//    or an earlier prepare's output (its manifest.json plus exactly the shards it lists),
//    which is then replaced as a whole. A directory holding anything else, a file, a path
//    under a file, a mount point, or a directory that is or holds an input is a ConfigError
//    (exit 2) naming the directory (and a few of its entries).
//  - OutputStaging writes into a new directory beside the output, `.NAME.prepare-PID.tmp`,
//    that becomes the output by one rename when complete; an earlier output is swapped out
//    in one atomic exchange and only then are its files (those its manifest lists) removed.
//    Destroyed before publish() (an error, an interruption), it removes the staging
//    directory and the parent directories it created: the output is as it was.
#pragma once

#include <string>
#include <vector>

namespace hydra::data {

struct OutputPlan {
  std::string output;                       // as the user wrote it, for messages
  std::string target;                       // absolute path that becomes the output
  bool exists = false;                      // target is an existing (empty or earlier) directory
  std::vector<std::string> previous_files;  // an earlier output's manifest and shards: replaced
  std::vector<std::string> missing_parents; // to create, outermost first
};

// Checks --output against the inputs and what is on disk; changes nothing.
OutputPlan check_output(const std::string& output, const std::vector<std::string>& inputs);

class OutputStaging {
 public:
  explicit OutputStaging(OutputPlan plan);  // creates the staging directory (ConfigError if it cannot)
  ~OutputStaging();
  OutputStaging(const OutputStaging&) = delete;
  OutputStaging& operator=(const OutputStaging&) = delete;

  // The directory to write the shards and the manifest into.
  const std::string& dir() const { return staging_; }
  // Moves the staging directory into place as the output (RuntimeFailure if it cannot).
  void publish();

 private:
  void swap_with_earlier();  // afterwards staging_ holds the earlier output
  void remove_created_parents();

  OutputPlan plan_;
  std::vector<std::string> created_parents_;  // outermost first
  std::string staging_;
  bool published_ = false;
};

}  // namespace hydra::data
