// launcher/option_values.h: the list and number parsing every command's options share.
#include "launcher/option_values.h"

#include <gtest/gtest.h>

namespace hydra::launcher {
namespace {

TEST(OptionValues, SplitListKeepsEveryItemEmptyOnesIncluded) {
  EXPECT_EQ(split_list("1,4,8"), (std::vector<std::string>{"1", "4", "8"}));
  EXPECT_EQ(split_list("4K"), (std::vector<std::string>{"4K"}));
  // Empty items stay, so that "1,,4" and "1,4," are refused rather than read as "1,4".
  EXPECT_EQ(split_list("1,,4"), (std::vector<std::string>{"1", "", "4"}));
  EXPECT_EQ(split_list("1,4,"), (std::vector<std::string>{"1", "4", ""}));
}

TEST(OptionValues, WholeNumberTakesTheWholeTextOnly) {
  EXPECT_EQ(whole_number("20"), 20);
  EXPECT_EQ(whole_number("-3"), -3);
  EXPECT_EQ(whole_number("1099511627776"), 1099511627776LL);
  for (const char* bad : {"", "4x", "1e3", "2.5", " 4", "4 ", "K", "99999999999999999999"}) {
    EXPECT_FALSE(whole_number(bad).has_value()) << "'" << bad << "'";
  }
}

}  // namespace
}  // namespace hydra::launcher
