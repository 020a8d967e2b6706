/* c-embed: the smallest complete host of libdsv4, in plain C99 — load a model, render a one-message
 * chat, tokenize it, stream a greedy answer through the token callback, print usage statistics and
 * free everything. Builds against an installed libdsv4 (CMake package or pkg-config; see
 * CMakeLists.txt here and docs/api.md). Usage: c-embed MODEL_DIR [PROMPT] [MAX_NEW_TOKENS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dsv4.h>

/* Prints the failing call with its status and the library's explanation, then jumps to cleanup. */
#define TRY(call)                                                                            \
  do {                                                                                       \
    dsv4_status st_ = (call);                                                                \
    if (st_ != DSV4_OK) {                                                                    \
      fprintf(stderr, "%s: %s: %s\n", #call, dsv4_status_name(st_), dsv4_last_error());      \
      goto done;                                                                             \
    }                                                                                        \
  } while (0)

/* Streams each piece as soon as it is complete UTF-8. Returning non-zero would stop generation. */
static int on_token(int32_t token, const char* piece, size_t len, void* user_data) {
  (void)token;
  (void)user_data;
  fwrite(piece, 1, len, stdout);
  fflush(stdout);
  return 0;
}

/* The user text as a JSON string (quotes, backslashes and control characters escaped). */
static char* json_string(const char* s) {
  char* out = (char*)malloc(strlen(s) * 6 + 3);
  char* o = out;
  if (!out) return NULL;
  *o++ = '"';
  for (; *s; ++s) {
    const unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      *o++ = '\\';
      *o++ = (char)c;
    } else if (c < 0x20) {
      o += sprintf(o, "\\u%04x", c);
    } else {
      *o++ = (char)c;
    }
  }
  *o++ = '"';
  *o = '\0';
  return out;
}

int main(int argc, char** argv) {
  const char* dir = argc > 1 ? argv[1] : NULL;
  const char* question = argc > 2 ? argv[2] : "Write one sentence about the sea.";
  int rc = 1;
  dsv4_model* model = NULL;
  dsv4_session* session = NULL;
  const dsv4_tokenizer* tok = NULL;
  char* quoted = NULL;
  char* messages = NULL;
  char* prompt = NULL;
  int32_t* ids = NULL;
  size_t n_prompt = 0, n_ids = 0;
  dsv4_model_params mp = dsv4_model_default_params();
  dsv4_chat_params cp = dsv4_chat_default_params();
  dsv4_generate_params gp = dsv4_generate_default_params();
  dsv4_generate_result res;
  dsv4_session_stats stats;

  if (!dir) {
    fprintf(stderr, "usage: %s MODEL_DIR [PROMPT] [MAX_NEW_TOKENS]\n", argv[0]);
    return 2;
  }
  if (dsv4_abi_version() != DSV4_ABI_VERSION) {
    fprintf(stderr, "libdsv4 ABI %u, built for %d\n", (unsigned)dsv4_abi_version(), DSV4_ABI_VERSION);
    return 1;
  }
  fprintf(stderr, "libdsv4 %s\n", dsv4_version());

  mp.log_level = DSV4_LOG_WARN;
  TRY(dsv4_model_load(dir, &mp, &model));
  TRY(dsv4_model_get_tokenizer(model, &tok));

  /* messages JSON → prompt text (two calls: ask for the size, then fill) */
  quoted = json_string(question);
  if (!quoted) goto done;
  messages = (char*)malloc(strlen(quoted) + 64);
  if (!messages) goto done;
  sprintf(messages, "[{\"role\": \"user\", \"content\": %s}]", quoted);
  if (dsv4_chat_render(messages, &cp, NULL, 0, &n_prompt) != DSV4_ERR_BUFFER_TOO_SMALL) {
    fprintf(stderr, "dsv4_chat_render: %s\n", dsv4_last_error());
    goto done;
  }
  prompt = (char*)malloc(n_prompt + 1);
  if (!prompt) goto done;
  TRY(dsv4_chat_render(messages, &cp, prompt, n_prompt + 1, &n_prompt));

  /* prompt text → token ids; the rendered prompt already holds BOS, so add_special = false */
  if (dsv4_tokenizer_encode(tok, prompt, n_prompt, false, NULL, 0, &n_ids) != DSV4_ERR_BUFFER_TOO_SMALL) {
    fprintf(stderr, "dsv4_tokenizer_encode: %s\n", dsv4_last_error());
    goto done;
  }
  ids = (int32_t*)malloc(n_ids * sizeof(int32_t));
  if (!ids) goto done;
  TRY(dsv4_tokenizer_encode(tok, prompt, n_prompt, false, ids, n_ids, &n_ids));

  TRY(dsv4_session_create(model, 4096, &session));
  gp.max_new_tokens = argc > 3 ? atoi(argv[3]) : 32;
  gp.sampler.temperature = 0.0f; /* greedy: the same answer every run */
  TRY(dsv4_session_generate(session, ids, n_ids, &gp, on_token, NULL, &res));
  TRY(dsv4_session_get_stats(session, &stats));
  printf("\n");
  fprintf(stderr, "[%s] prompt %lld tokens, generated %lld tokens in %.3f s\n", dsv4_stop_reason_name(res.stop_reason),
          (long long)res.n_prompt_tokens, (long long)res.n_generated_tokens, res.decode_seconds);
  rc = 0;

done:
  dsv4_session_free(session); /* every free function accepts NULL */
  dsv4_model_free(model);
  free(ids);
  free(prompt);
  free(messages);
  free(quoted);
  return rc;
}
