// common/json.h's strings: JSON text is UTF-8, so what hydra writes must be valid UTF-8 even
// when the string is not (a generated text cut inside a character). Expected outputs written
// by hand from RFC 8259 and RFC 3629.
#include <string>

#include <gtest/gtest.h>

#include "common/json.h"

namespace {

std::string dumped(const std::string& s) { return hydra::common::Json(s).dump(); }

TEST(JsonStrings, WellFormedUtf8PassesThrough) {
  EXPECT_EQ(dumped("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), "\"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\"");
  EXPECT_EQ(dumped("\xEF\xBF\xBF\xF4\x8F\xBF\xBF"), "\"\xEF\xBF\xBF\xF4\x8F\xBF\xBF\"");  // U+FFFF, U+10FFFF
}

TEST(JsonStrings, EscapesQuotesBackslashesAndControls) {
  EXPECT_EQ(dumped(std::string("a\"b\\c\nd\te\x01", 10) + std::string(1, '\0')), "\"a\\\"b\\\\c\\nd\\te\\u0001\\u0000\"");
}

TEST(JsonStrings, EachByteOutsideAWellFormedSequenceBecomesReplacement) {
  EXPECT_EQ(dumped("\xC1"), "\"\\ufffd\"");                           // lone byte (never valid)
  EXPECT_EQ(dumped("ab\xE2\x82"), "\"ab\\ufffd\\ufffd\"");            // a character cut at the end
  EXPECT_EQ(dumped("\xC0\xAF"), "\"\\ufffd\\ufffd\"");                 // overlong '/'
  EXPECT_EQ(dumped("\xED\xA0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");      // a UTF-16 surrogate
  EXPECT_EQ(dumped("\xF4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");  // past U+10FFFF
  EXPECT_EQ(dumped("\x80x\xC3\xA9"), "\"\\ufffdx\xC3\xA9\"");          // a stray continuation byte
}

}  // namespace
