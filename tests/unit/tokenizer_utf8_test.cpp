// UTF-8 helpers and the byte-level alphabet, against published references: the Unicode
// Standard's "substitution of maximal subparts" example (chapter 3, U+FFFD substitution)
// and the GPT-2 byte alphabet (space is 'Ġ' U+0120, newline 'Ċ' U+010A).
#include <gtest/gtest.h>

#include <string>

#include "moeopt/tokenizer/byte_level.h"
#include "moeopt/tokenizer/regex.h"
#include "moeopt/tokenizer/utf8.h"

namespace moeopt::tokenizer {

TEST(TokenizerUtf8, LossyReplacesMaximalSubpartsLikeTheUnicodeStandard) {
  // Unicode 15, section 3.9, table 3-8: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 decodes to
  // a FFFD FFFD FFFD b FFFD c FFFD FFFD d.
  const std::string in = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
  const std::string r(kReplacementChar);
  EXPECT_EQ(utf8_lossy(in), "a" + r + r + r + "b" + r + "c" + r + r + "d");
  // Surrogates and overlongs are invalid: each ill-formed byte is its own subpart.
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), r + r + r);
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), r + r);
  EXPECT_EQ(utf8_lossy("ok \xE4\xB8"), "ok " + r);  // truncated 3-byte sequence: one U+FFFD
  EXPECT_EQ(utf8_lossy("\xE4\xB8\xAD"), "\xE4\xB8\xAD");
}

TEST(TokenizerUtf8, FindsFirstInvalidByte) {
  EXPECT_EQ(find_invalid_utf8("plain ascii"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("\xF0\x9F\x98\x80 emoji"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("ab\xC0\x80"), 2u);            // overlong NUL
  EXPECT_EQ(find_invalid_utf8("abc\xED\xA0\x80"), 3u);       // surrogate D800
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);      // above U+10FFFF
  EXPECT_EQ(find_invalid_utf8("x\xE4\xB8"), 1u);             // truncated
  EXPECT_EQ(find_invalid_utf8(std::string("a\0b", 3)), std::string_view::npos);
}

TEST(TokenizerUtf8, ByteLevelAlphabetMatchesGpt2) {
  const auto& a = ByteLevelAlphabet::get();
  EXPECT_EQ(a.char_for_byte(' '), "\xC4\xA0");   // U+0120 'Ġ'
  EXPECT_EQ(a.char_for_byte('\n'), "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(a.char_for_byte('A'), "A");
  EXPECT_EQ(a.char_for_byte(0xAD), "\xC5\x83");  // soft hyphen is the 68th remapped byte: U+0143
  for (int b = 0; b < 256; ++b) {
    const std::string& s = a.char_for_byte(static_cast<uint8_t>(b));
    size_t i = 0;
    EXPECT_EQ(a.byte_for_char(next_code_point(s, i)), b);
  }
  EXPECT_EQ(a.byte_for_char(U'\u4e2d'), -1);
}

TEST(TokenizerRegex, TranslatesOnigurumaWhitespace) {
  auto p = translate_oniguruma(R"(\s+(?!\S)|[^\s\p{Lu}])");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(*p, R"([\t-\r\x{85}\p{Z}]+(?![^\t-\r\x{85}\p{Z}])|[^\t-\r\x{85}\p{Z}\p{Lu}])");
  EXPECT_FALSE(translate_oniguruma(R"([\S])").ok());
  EXPECT_FALSE(translate_oniguruma("[abc").ok());
}

TEST(TokenizerRegex, WhitespaceClassExcludesMongolianVowelSeparator) {
  // U+180E is not White_Space since Unicode 6.3; Oniguruma's \s skips it, PCRE2's \h would not.
  auto re = Regex::compile(R"(\s+)", "test");
  ASSERT_TRUE(re.ok()) << re.status().message();
  std::vector<std::pair<size_t, size_t>> m;
  ASSERT_TRUE(re->find_all("a\xE1\xA0\x8E" "b\xC2\xA0" "c\xE2\x80\xA8", m).ok());
  // Matches: U+00A0 (bytes 5..7) and U+2028 (bytes 8..11); not U+180E.
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0], std::make_pair(size_t(5), size_t(7)));
  EXPECT_EQ(m[1], std::make_pair(size_t(8), size_t(11)));
}

TEST(TokenizerRegex, LetterClassKnowsCharactersNewerThanPcre2Tables) {
  // U+2EBF0 (CJK Unified Ideographs Extension I, Unicode 15.1) and U+13460 (Egyptian
  // Hieroglyphs Extended-A, Unicode 16) are letters for the reference (Oniguruma).
  auto re = Regex::compile(R"(\p{L}+|[^\p{L}\s]+)", "test");
  ASSERT_TRUE(re.ok()) << re.status().message();
  std::vector<std::pair<size_t, size_t>> m;
  ASSERT_TRUE(re->find_all("a\xF0\xAE\xAF\xB0\xF0\x93\x91\xA0" "b!", m).ok());
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0], std::make_pair(size_t(0), size_t(10)));  // a + both characters + b
  EXPECT_EQ(m[1], std::make_pair(size_t(10), size_t(11)));
}

TEST(TokenizerRegex, BadPatternIsAnError) {
  auto re = Regex::compile("(unclosed", "normalizer Replace");
  ASSERT_FALSE(re.ok());
  EXPECT_NE(re.status().message().find("normalizer Replace"), std::string::npos);
}

}  // namespace moeopt::tokenizer
