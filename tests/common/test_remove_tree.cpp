// common::remove_tree against what `rm -rf` leaves: the tree gone, a symbolic link inside it
// removed without touching what it points to, a missing path accepted.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/remove_tree.h"

namespace {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);  // the test's own setup may use the standard library
  fs::create_directories(p);
  return p;
}

TEST(RemoveTree, RemovesNestedDirectoriesAndFilesButNotLinkTargets) {
  const fs::path root = scratch("hydra_remove_tree");
  const fs::path tree = root / "step_00000002";
  fs::create_directories(tree / "a" / "b" / "c");
  std::ofstream(tree / "rank_00000.h5") << "data";
  std::ofstream(tree / "a" / "b" / "c" / "deep.txt") << "deep";
  std::ofstream(root / "outside.txt") << "keep me";
  fs::create_symlink(root / "outside.txt", tree / "a" / "link");
  fs::create_directory_symlink(root, tree / "a" / "dir_link");  // a cycle if followed

  hydra::common::remove_tree(tree.string());

  EXPECT_FALSE(fs::exists(fs::symlink_status(tree)));
  ASSERT_TRUE(fs::exists(root / "outside.txt")) << "a link target outside the tree was removed";
  std::ifstream in(root / "outside.txt");
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "keep me");
  fs::remove_all(root);
}

TEST(RemoveTree, MissingPathAndSingleFile) {
  const fs::path root = scratch("hydra_remove_tree_file");
  EXPECT_NO_THROW(hydra::common::remove_tree((root / "never_there").string()));
  std::ofstream(root / "COMMIT") << "";
  hydra::common::remove_tree((root / "COMMIT").string());
  EXPECT_FALSE(fs::exists(root / "COMMIT"));
  fs::remove_all(root);
}

}  // namespace
