/* bpe.h - OpenAI CLIP's byte-level BPE tokenizer (clip/simple_tokenizer.py),
 * exactly: ftfy stand-in (NFC), double HTML unescape, whitespace clean, full
 * Unicode lowercase, the CLIP pre-tokenizer pattern (special tokens,
 * contractions, letters, single numbers, other runs), bytes_to_unicode,
 * merges by rank, '</w>' word ends.
 *
 * Vocabulary ids: 256 byte symbols, the same 256 with '</w>', then one id per
 * merge in merge order, then <|startoftext|> and <|endoftext|>. */
#ifndef UNCLIP_BPE_H
#define UNCLIP_BPE_H

#include <stddef.h>
#include <stdint.h>

typedef struct uc_bpe uc_bpe;

/* OpenAI's bpe_simple_vocab_16e6.txt.gz: the first line is a header, the
 * next 48894 lines are used. NULL and uc_err on failure. */
uc_bpe *uc_bpe_load_gz(const char *path);
/* Merges as text in the same format (header line, then "a b" per line),
 * uncompressed, as a model file carries them in its metadata; nmerges < 0
 * uses every line after the header. */
uc_bpe *uc_bpe_load_text(const char *text, size_t len, int nmerges);
void uc_bpe_free(uc_bpe *b);
int uc_bpe_vocab_size(const uc_bpe *b);
int32_t uc_bpe_sot(const uc_bpe *b);
int32_t uc_bpe_eot(const uc_bpe *b);

/* The vocabulary file: $UNCLIP_VOCAB, else the share directory, else
 * ../shared/vocab relative to the binary's directory or the working
 * directory. NULL when none exists. */
const char *uc_bpe_default_path(void);

/* SimpleTokenizer.encode: ids without SOT/EOT. Writes at most max ids and
 * returns the full count (which may exceed max), or -1 on bad UTF-8. */
int uc_bpe_encode(const uc_bpe *b, const char *text, int32_t *ids, int max);

/* clip.tokenize for one string: tokens[ctx] = SOT, ids, EOT, zeros and
 * mask[ctx] = 1 for SOT..EOT inclusive (Karlo's mask). When the text does
 * not fit: truncate keeps ctx tokens with the last set to EOT; otherwise
 * -1 with an error saying how many tokens it needed. */
int uc_tokenize(const uc_bpe *b, const char *text, int ctx, int truncate, int32_t *tokens, uint8_t *mask);

#endif
