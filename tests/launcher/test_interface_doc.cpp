// docs/INTERFACE.md must list every config key of the schema: the doc users read stays
// current with the code that parses their configs.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "launcher/config_schema.h"

TEST(InterfaceDoc, ListsEveryConfigKey) {
  std::ifstream in(std::string(HYDRA_SOURCE_DIR) + "/docs/INTERFACE.md");
  ASSERT_TRUE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  for (const auto& spec : hydra::launcher::config_schema()) {
    EXPECT_NE(doc.find(std::string("| ") + spec.path + " |"), std::string::npos)
        << spec.path << " is missing from the key table of docs/INTERFACE.md";
  }
}
