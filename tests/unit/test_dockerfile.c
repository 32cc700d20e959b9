// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the template Dockerfile parser: every instruction and form, continuation lines,
   variable substitution, ARG/ENV scoping, WORKDIR resolution, labels, every error and cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include "template/dockerfile.h"

static struct dockerfile *parse_args(const char *text, const char *const *ba)
{
    char err[256] = "untouched";
    struct dockerfile *df = (struct dockerfile *)1;
    int rc = dockerfile_parse(text, strlen(text), ba, &df, err, sizeof(err));
    if (rc != 0)
        fail_msg("parse failed: %s\n--- text:\n%s", err, text);
    assert_non_null(df);
    assert_string_equal(err, "");
    return df;
}

static struct dockerfile *parse(const char *text)
{
    return parse_args(text, NULL);
}

/* Parsing fails with EINVAL and a message containing `want`. */
static void expect_err_args(const char *text, const char *const *ba, const char *want)
{
    char err[256] = "";
    struct dockerfile *df = (struct dockerfile *)1;
    errno = 0;
    int rc = dockerfile_parse(text, strlen(text), ba, &df, err, sizeof(err));
    if (rc == 0)
        fail_msg("parse succeeded, expected error '%s'\n--- text:\n%s", want, text);
    assert_int_equal(rc, -1);
    assert_int_equal(errno, EINVAL);
    assert_null(df);
    if (!strstr(err, want))
        fail_msg("error '%s' does not contain '%s'\n--- text:\n%s", err, want, text);
}

static void expect_err(const char *text, const char *want)
{
    expect_err_args(text, NULL, want);
}

static size_t list_len(char **l)
{
    size_t n = 0;
    while (l && l[n])
        n++;
    return n;
}

/* ---- every instruction ---- */

static void test_all_instructions(void **state)
{
    struct dockerfile *df = parse("FROM base\n"
                                  "ARG VERSION=1.2\n"
                                  "ENV APP=/srv/app\n"
                                  "WORKDIR $APP\n"
                                  "RUN apt-get install -y curl\n"
                                  "COPY --chown=user:user main.py lib/ ./\n"
                                  "ADD data.tar.gz /opt/\n"
                                  "USER user\n"
                                  "LABEL org.example.version=$VERSION\n"
                                  "CMD python3 main.py\n");
    assert_string_equal(df->from, "base");
    assert_int_equal(df->nsteps, 8);
    struct df_step *s = df->steps;

    assert_int_equal(s[0].op, DF_ARG);
    assert_int_equal(s[0].line, 2);
    assert_string_equal(s[0].key, "VERSION");
    assert_string_equal(s[0].value, "1.2");
    assert_string_equal(s[0].text, "ARG VERSION=1.2");

    assert_int_equal(s[1].op, DF_ENV);
    assert_string_equal(s[1].key, "APP");
    assert_string_equal(s[1].value, "/srv/app");
    assert_string_equal(s[1].text, "ENV APP=/srv/app");

    assert_int_equal(s[2].op, DF_WORKDIR);
    assert_string_equal(s[2].path, "/srv/app");
    assert_string_equal(s[2].text, "WORKDIR /srv/app");

    assert_int_equal(s[3].op, DF_RUN);
    assert_int_equal(s[3].line, 5);
    assert_string_equal(s[3].cmd, "apt-get install -y curl");
    assert_null(s[3].argv);
    assert_string_equal(s[3].text, "RUN apt-get install -y curl");

    assert_int_equal(s[4].op, DF_COPY);
    assert_int_equal(s[4].nsrcs, 2);
    assert_string_equal(s[4].srcs[0], "main.py");
    assert_string_equal(s[4].srcs[1], "lib");
    assert_null(s[4].srcs[2]);
    assert_string_equal(s[4].dst, "/srv/app/");
    assert_string_equal(s[4].chown, "user:user");
    assert_null(s[4].chmod);
    assert_string_equal(s[4].text, "COPY --chown=user:user main.py lib /srv/app/");

    assert_int_equal(s[5].op, DF_ADD);
    assert_int_equal(s[5].nsrcs, 1);
    assert_string_equal(s[5].srcs[0], "data.tar.gz");
    assert_string_equal(s[5].dst, "/opt/");
    assert_null(s[5].chown);
    assert_string_equal(s[5].text, "ADD data.tar.gz /opt/");

    assert_int_equal(s[6].op, DF_USER);
    assert_string_equal(s[6].user, "user");
    assert_string_equal(s[6].text, "USER user");

    assert_int_equal(s[7].op, DF_LABEL);
    assert_string_equal(s[7].key, "org.example.version");
    assert_string_equal(s[7].value, "1.2");
    assert_string_equal(s[7].text, "LABEL org.example.version=1.2");

    assert_string_equal(df->start_cmd, "python3 main.py");
    assert_int_equal(df->start_line, 10);
    assert_int_equal(df->ready, DF_READY_NONE);
    assert_int_equal(list_len(df->envs), 1);
    assert_string_equal(df->envs[0], "APP=/srv/app");
    assert_string_equal(df->workdir, "/srv/app");
    assert_string_equal(df->user, "user");
    dockerfile_free(df);

    /* The minimal file: no steps, empty (non-NULL) envs, nothing set. */
    df = parse("FROM /images/rootfs.ext4");
    assert_string_equal(df->from, "/images/rootfs.ext4");
    assert_int_equal(df->nsteps, 0);
    assert_non_null(df->envs);
    assert_null(df->envs[0]);
    assert_null(df->workdir);
    assert_null(df->user);
    assert_null(df->start_cmd);
    assert_int_equal(df->start_line, 0);
    dockerfile_free(df);
}

/* ---- lines ---- */

static void test_lines(void **state)
{
    struct dockerfile *df = parse("\xef\xbb\xbf# syntax=docker/dockerfile:1\n"
                                  "# a comment\n"
                                  "\n"
                                  "   # an indented comment\n"
                                  "from base\r\n"
                                  "  run echo a \\  \n"
                                  "    && echo b\n"
                                  "Run echo c \\\n"
                                  "# a comment inside the continuation\n"
                                  "   # and an indented one\n"
                                  "\n"
                                  "    \t\n"
                                  "  && echo d\n"
                                  "RUN echo \\\\\n"
                                  "ENV X=1\n"
                                  "\\\n"
                                  "RUN echo last \\");
    assert_int_equal(df->nsteps, 4);
    assert_int_equal(df->steps[0].line, 6);
    assert_string_equal(df->steps[0].cmd, "echo a     && echo b");
    assert_int_equal(df->steps[1].line, 8);
    assert_string_equal(df->steps[1].cmd, "echo c   && echo d");
    assert_string_equal(df->steps[1].text, "RUN echo c   && echo d");
    /* As in Docker, a final '\' continues even when escaped by another one. */
    assert_int_equal(df->steps[2].line, 14);
    assert_string_equal(df->steps[2].cmd, "echo \\ENV X=1");
    /* A lone '\' joins with the next line; a '\' at the end of the file ends the instruction. */
    assert_int_equal(df->steps[3].line, 16);
    assert_string_equal(df->steps[3].cmd, "echo last");
    dockerfile_free(df);
}

static void test_lines_numbers(void **state)
{
    /* Line numbers count physical lines, with CRLF and continuations. */
    struct dockerfile *df = parse("FROM base\r\n"
                                  "\r\n"
                                  "RUN a \\\r\n"
                                  " b\r\n"
                                  "ENV A=1 \\\r\n"
                                  "    B=2\r\n"
                                  "USER u\r\n");
    assert_int_equal(df->nsteps, 4);
    assert_int_equal(df->steps[0].line, 3);
    assert_string_equal(df->steps[0].cmd, "a  b");
    assert_int_equal(df->steps[1].line, 5);
    assert_int_equal(df->steps[2].line, 5);
    assert_string_equal(df->steps[2].key, "B");
    assert_int_equal(df->steps[3].line, 7);
    assert_string_equal(df->steps[3].user, "u");
    dockerfile_free(df);

    /* Errors name the line the instruction starts on. */
    expect_err("FROM base\n\n# c\nRUN ok\nRUN a \\\n b \\\n c\nBOGUS x\n", "line 8: ");
    expect_err("FROM base\nRUN a \\\n\n b\nENV \\\n  \n", "line 5: ENV needs a name");
}

/* ---- RUN ---- */

static void test_run(void **state)
{
    struct dockerfile *df =
        parse("FROM base\n"
              "ENV HOME=/root\n"
              "RUN echo $HOME ${HOME:-x} '$HOME' \\$HOME\n"
              "RUN [\"/bin/echo\", \"a b\", \"q\\\"\\\\\\/\\n\\t\\u00e9\\ud83d\\ude00\", "
              "\"$HOME\"]\n"
              "RUN [ -f /etc/passwd ] && echo yes\n"
              "RUN [\"a\"] && b\n"
              "RUN   [ \"x\" ,\"y\"  ]   \n"
              "RUN -- --not-a-flag\n"
              "RUN cat <<< \"here string\" \"<<EOF\" '<<EOF'\n"
              "RUN [\"\\ud800x\"]\n");
    struct df_step *s = df->steps;
    assert_int_equal(df->nsteps, 9);
    /* RUN is never substituted: the shell does it with the step's environment. */
    assert_string_equal(s[1].cmd, "echo $HOME ${HOME:-x} '$HOME' \\$HOME");
    assert_string_equal(s[1].text, "RUN echo $HOME ${HOME:-x} '$HOME' \\$HOME");

    assert_null(s[2].cmd);
    assert_non_null(s[2].argv);
    assert_int_equal(list_len(s[2].argv), 4);
    assert_string_equal(s[2].argv[0], "/bin/echo");
    assert_string_equal(s[2].argv[1], "a b");
    assert_string_equal(s[2].argv[2], "q\"\\/\n\t\xc3\xa9\xf0\x9f\x98\x80");
    assert_string_equal(s[2].argv[3], "$HOME");
    assert_string_equal(
        s[2].text, "RUN [\"/bin/echo\", \"a b\", \"q\\\"\\\\/\\n\\t\xc3\xa9\xf0\x9f\x98\x80\", "
                   "\"$HOME\"]");

    /* Not a JSON array: shell form, as Docker does. */
    assert_string_equal(s[3].cmd, "[ -f /etc/passwd ] && echo yes");
    assert_null(s[3].argv);
    assert_string_equal(s[4].cmd, "[\"a\"] && b");

    assert_int_equal(list_len(s[5].argv), 2);
    assert_string_equal(s[5].argv[1], "y");
    assert_string_equal(s[5].text, "RUN [\"x\", \"y\"]");

    assert_string_equal(s[6].cmd, "--not-a-flag");
    assert_string_equal(s[6].text, "RUN -- --not-a-flag");
    /* Quoted or here-string "<<" is no heredoc. */
    assert_string_equal(s[7].cmd, "cat <<< \"here string\" \"<<EOF\" '<<EOF'");
    /* A lone surrogate becomes U+FFFD, as Go's JSON decoder does. */
    assert_string_equal(s[8].argv[0], "\xef\xbf\xbdx");
    dockerfile_free(df);

    expect_err("FROM base\nRUN\n", "line 2: RUN needs a command");
    expect_err("FROM base\nRUN    \n", "line 2: RUN needs a command");
    expect_err("FROM base\nRUN []\n", "line 2: RUN []: the exec form needs a program");
    expect_err("FROM base\nRUN [\"a\", 1]\n", "line 2: RUN: a JSON array must hold only strings");
    expect_err("FROM base\nRUN [\"a\", {\"b\": [true, null, -1.5e3]}]\n",
               "JSON array must hold only strings");
    expect_err("FROM base\nRUN [\"a\\u0000b\"]\n", "\\u0000");
    expect_err("FROM base\nRUN --mount=type=cache,target=/x make\n",
               "line 2: RUN --mount is not supported");
    expect_err("FROM base\nRUN --network=none make\n", "RUN --network is not supported");
    expect_err("FROM base\nRUN <<EOF\necho hi\nEOF\n", "line 2: RUN: heredocs (<<EOF)");
    expect_err("FROM base\nRUN python3 <<-'EOF' > out\n", "heredocs");
    expect_err("FROM base\nRUN cat 0<<EOF\n", "heredocs");
}

/* ---- COPY / ADD ---- */

static void test_copy(void **state)
{
    struct dockerfile *df =
        parse("FROM base\n"
              "ARG SRC=src\n"
              "ARG OWNER=1000\n"
              "COPY a /abs\n"
              "COPY a rel\n"
              "WORKDIR /w\n"
              "COPY a rel\n"
              "COPY a .\n"
              "COPY a b/ ..\n"
              "COPY ./x/../y/./z/ /etc/../srv//q/\n"
              "COPY / . ./ x/.. dir/\n"
              "COPY [\"my file\", \"${SRC}/a b\", \"/d e/\"]\n"
              "COPY --chown=$OWNER:${OWNER} --chmod=0755 $SRC/run.sh \"/usr/local/bin/a "
              "b\"\n"
              "ADD --chmod=644 [\"x\", \"y\"]\n"
              "COPY \"--odd\" \\$x 'q$SRC' /t/\n");
    struct df_step *s = df->steps;
    assert_int_equal(df->nsteps, 14);
    assert_string_equal(s[2].dst, "/abs");
    assert_string_equal(s[3].dst, "/rel"); /* WORKDIR starts at / */
    assert_string_equal(s[5].dst, "/w/rel");
    assert_string_equal(s[6].dst, "/w/");
    assert_string_equal(s[7].dst, "/");
    assert_int_equal(s[7].nsrcs, 2);
    assert_string_equal(s[7].srcs[1], "b");
    assert_string_equal(s[8].srcs[0], "y/z");
    assert_string_equal(s[8].dst, "/srv/q/");
    assert_string_equal(s[8].text, "COPY y/z /srv/q/");
    /* Sources are relative to the context root, which "/" and "." both name. */
    assert_int_equal(s[9].nsrcs, 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(s[9].srcs[i], ".");
    assert_string_equal(s[9].dst, "/w/dir/");
    /* The JSON form, with substitution as Docker does it. */
    assert_int_equal(s[10].nsrcs, 2);
    assert_string_equal(s[10].srcs[0], "my file");
    assert_string_equal(s[10].srcs[1], "src/a b");
    assert_string_equal(s[10].dst, "/d e/");
    assert_string_equal(s[10].text, "COPY \"my file\" \"src/a b\" \"/d e/\"");
    /* Flags are substituted too. */
    assert_string_equal(s[11].chown, "1000:1000");
    assert_string_equal(s[11].chmod, "0755");
    assert_int_equal(s[11].mode, 0755);
    assert_string_equal(s[11].srcs[0], "src/run.sh");
    assert_string_equal(s[11].dst, "/usr/local/bin/a b");
    assert_string_equal(s[11].text,
                        "COPY --chown=1000:1000 --chmod=0755 src/run.sh \"/usr/local/bin/a b\"");
    assert_int_equal(s[12].op, DF_ADD);
    assert_string_equal(s[12].chmod, "644");
    assert_int_equal(s[12].mode, 0644);
    assert_string_equal(s[12].dst, "/w/y");
    /* Words that need it are quoted in the text, so that it reads back the same. */
    assert_string_equal(s[12].text, "ADD --chmod=644 x /w/y");
    assert_string_equal(s[13].text, "COPY \"--odd\" \"\\$x\" \"q\\$SRC\" /t/");
    dockerfile_free(df);

    /* Only a source written as a URL is one. */
    df = parse("FROM base\nCOPY /git@x /http:/x ./https://y /t/\n");
    assert_string_equal(df->steps[0].srcs[0], "git@x");
    assert_string_equal(df->steps[0].srcs[1], "http:/x");
    assert_string_equal(df->steps[0].srcs[2], "https:/y");
    assert_string_equal(df->steps[0].text, "COPY ./git@x http:/x https:/y /t/");
    dockerfile_free(df);

    df = parse("FROM base\nCOPY \"--odd\" \\$x 'q$SRC' /t/\n");
    assert_int_equal(df->steps[0].nsrcs, 3);
    assert_string_equal(df->steps[0].srcs[0], "--odd");
    assert_string_equal(df->steps[0].srcs[1], "$x");
    assert_string_equal(df->steps[0].srcs[2], "q$SRC");
    assert_string_equal(df->steps[0].text, "COPY \"--odd\" \"\\$x\" \"q\\$SRC\" /t/");
    dockerfile_free(df);

    expect_err("FROM base\nCOPY\n", "line 2: COPY needs a source and a destination");
    expect_err("FROM base\nCOPY onlyone\n", "COPY needs a source and a destination");
    expect_err("FROM base\nCOPY [\"onlyone\"]\n", "COPY needs a source and a destination");
    expect_err("FROM base\nADD --chown=u x\n", "ADD needs a source and a destination");
    expect_err("FROM base\nCOPY a b c\n", "line 2: COPY with several sources needs a destination "
                                          "ending in '/'");
    expect_err("FROM base\nCOPY ../secret /x\n", "line 2: COPY source ../secret is outside the "
                                                 "build context");
    expect_err("FROM base\nCOPY a/../../b /x\n", "outside the build context");
    expect_err("FROM base\nADD https://example.com/f.tgz /x\n",
               "line 2: ADD from URLs is not supported; use RUN curl");
    expect_err("FROM base\nADD HTTP://example.com/f /x\n", "ADD from URLs is not supported");
    expect_err("FROM base\nADD git@github.com:a/b.git /x\n", "ADD from URLs is not supported");
    expect_err("FROM base\nCOPY http://example.com/f /x\n", "COPY does not take URLs");
    expect_err("FROM base\nCOPY --from=builder /a /b\n",
               "line 2: multi-stage builds are not supported");
    expect_err("FROM base\nCOPY --link a /b\n", "line 2: COPY --link is not supported");
    expect_err("FROM base\nCOPY --chown=a --chown=b x /y\n", "--chown given twice");
    expect_err("FROM base\nCOPY --chown x /y\n", "COPY: --chown needs a value");
    expect_err("FROM base\nCOPY --chown= x /y\n", "--chown needs a value");
    expect_err("FROM base\nCOPY --chmod=u+x x /y\n", "--chmod must be an octal mode");
    expect_err("FROM base\nCOPY --chmod=17777 x /y\n", "--chmod must be an octal mode");
    expect_err("FROM base\nCOPY --chmod=0000755 x /y\n", "--chmod must be an octal mode");
    expect_err("FROM base\nCOPY --chown=a:b:c x /y\n", "bad user");
    expect_err("FROM base\nCOPY --chown=:g x /y\n", "bad user");
    expect_err("FROM base\nCOPY \"\" /y\n", "COPY: empty source");
    expect_err("FROM base\nCOPY x \"\"\n", "COPY: empty destination");
    expect_err("FROM base\nCOPY $NOPE /y\n", "COPY: empty source");
    expect_err("FROM base\nCOPY <<EOF /x\nhi\nEOF\n", "COPY: heredocs");
    expect_err("FROM base\nCOPY 'unterminated /x\n", "unterminated single quote");
}

/* ---- ENV ---- */

static void test_env(void **state)
{
    struct dockerfile *df = parse("FROM base\n"
                                  "ENV A 1\n"
                                  "ENV LEGACY  many  words here \n"
                                  "ENV B=2 C=\"two words\" D='$A' E=\\$A F=a\\ b G=\n"
                                  "ENV A=new H=$A\n"
                                  "ENV \"Q\"=\"x\\\"y\\\\z\\n\"\n"
                                  "ENV U=\"${A}-$B\"\n"
                                  "ENV A=last\n");
    struct df_step *s = df->steps;
    assert_int_equal(df->nsteps, 13);
    assert_string_equal(s[0].key, "A");
    assert_string_equal(s[0].value, "1");
    assert_string_equal(s[1].key, "LEGACY");
    assert_string_equal(s[1].value, "many  words here");
    assert_string_equal(s[1].text, "ENV LEGACY=\"many  words here\"");
    assert_string_equal(s[2].value, "2");
    assert_string_equal(s[3].value, "two words");
    assert_string_equal(s[4].value, "$A");
    assert_string_equal(s[5].value, "$A");
    assert_string_equal(s[6].value, "a b");
    assert_string_equal(s[7].key, "G");
    assert_string_equal(s[7].value, "");
    assert_string_equal(s[7].text, "ENV G=\"\"");
    /* Pairs of one line see the values from before it: H gets the old A. */
    assert_string_equal(s[8].value, "new");
    assert_string_equal(s[9].key, "H");
    assert_string_equal(s[9].value, "1");
    /* Inside double quotes only \" \\ \$ are escapes. */
    assert_string_equal(s[10].key, "Q");
    assert_string_equal(s[10].value, "x\"y\\z\\n");
    assert_string_equal(s[10].text, "ENV Q=\"x\\\"y\\\\z\\\\n\"");
    assert_string_equal(s[11].value, "new-2");
    assert_int_equal(s[11].line, 7);
    /* Final state: one entry per name, last value, in the order names first appeared. */
    const char *want[] = {"A=last", "LEGACY=many  words here",
                          "B=2",    "C=two words",
                          "D=$A",   "E=$A",
                          "F=a b",  "G=",
                          "H=1",    "Q=x\"y\\z\\n",
                          "U=new-2"};
    assert_int_equal(list_len(df->envs), 11);
    for (size_t i = 0; i < 11; i++)
        assert_string_equal(df->envs[i], want[i]);
    dockerfile_free(df);

    expect_err("FROM base\nENV\n", "line 2: ENV needs a name and a value");
    expect_err("FROM base\nENV ONLY\n", "line 2: ENV needs a value");
    expect_err("FROM base\nENV A=1 B\n", "line 2: ENV: no '=' in B");
    expect_err("FROM base\nENV =x\n", "ENV: empty name");
    expect_err("FROM base\nENV $EMPTY=x\n", "ENV: empty name");
    expect_err("FROM base\nENV A=\"open\n", "unterminated double quote");
    expect_err("FROM base\nENV --x=1 A=1\n", "ENV --x is not supported");
}

/* ---- substitution ---- */

static void test_substitution(void **state)
{
    struct dockerfile *df =
        parse("FROM base\n"
              "ENV S=set E=\n"
              "ENV a1=$S a2=${S} a3=${S}x a4=$Sx a5=${U:-def} a6=${E:-def} "
              "a7=${E-def} a8=${U-def} a9=${S:-def}\n"
              "ENV b1=${S:+alt} b2=${E:+alt} b3=${E+alt} b4=${U+alt} b5=${U:+alt}\n"
              "ENV c1=\\$S c2='${S}' c3=\"$S ${S}\" c4=$ c5=a$ c6=$1 c7=$-x "
              "c8=\"\\$S\" c9=\"\\a\"\n"
              "ENV d1=${U:-${E:-${S}}} d2=${U:-'a b'} d3=${U:-\"q $S\"} "
              "d4=${S:+${S}${S}} d5=${U:-a\\}b}\n"
              "ENV e1=${S:?unused} e2=${E?unused}\n"
              "WORKDIR /$S/${U:-d}\n"
              "USER ${S}:$S\n"
              "LABEL l=$S \"k$S\"=v\n");
    const char *want[] = {
        "S=set",  "E=",      "a1=set",     "a2=set",   "a3=setx",   "a4=",    "a5=def", "a6=def",
        "a7=",    "a8=def",  "a9=set",     "b1=alt",   "b2=",       "b3=alt", "b4=",    "b5=",
        "c1=$S",  "c2=${S}", "c3=set set", "c4=$",     "c5=a$",     "c6=$1",  "c7=$-x", "c8=$S",
        "c9=\\a", "d1=set",  "d2=a b",     "d3=q set", "d4=setset", "d5=a}b", "e1=set", "e2=",
    };
    size_t nwant = sizeof(want) / sizeof(want[0]);
    assert_int_equal(list_len(df->envs), nwant);
    for (size_t i = 0; i < nwant; i++)
        assert_string_equal(df->envs[i], want[i]);
    struct df_step *last = &df->steps[df->nsteps - 1];
    assert_string_equal(df->workdir, "/set/d");
    assert_string_equal(df->user, "set:set");
    assert_string_equal(df->steps[df->nsteps - 2].key, "l");
    assert_string_equal(df->steps[df->nsteps - 2].value, "set");
    assert_string_equal(last->key, "kset");
    assert_string_equal(last->value, "v");
    dockerfile_free(df);

    expect_err("FROM base\nENV A=\"${U:?is required}\"\n", "line 2: U: is required");
    /* Words split at blanks before substitution, as in Docker: quote such a word. */
    expect_err("FROM base\nENV A=${U:-a b}\n", "missing '}'");
    expect_err("FROM base\nENV E=\nENV A=${E:?}\n", "line 3: E: is not set");
    expect_err("FROM base\nENV A=${U?}\n", "U: is not set");
    expect_err("FROM base\nENV A=${U#x}\n", "unsupported substitution ${U#x}");
    expect_err("FROM base\nENV A=${U/a/b}\n", "unsupported substitution");
    expect_err("FROM base\nENV A=${U:=x}\n", "unsupported substitution");
    expect_err("FROM base\nENV A=${U\n", "missing '}'");
    expect_err("FROM base\nENV A=${U:-x\n", "missing '}'");
    expect_err("FROM base\nENV A=${}\n", "bad substitution");
    expect_err("FROM base\nENV A=${-x}\n", "bad substitution");
    expect_err("FROM base\nENV A='x\n", "unterminated single quote");
}

/* ---- ARG ---- */

static void test_arg(void **state)
{
    const char *text = "ARG TAG=base\n"
                       "ARG UNUSED\n"
                       "FROM ${TAG}\n"
                       "RUN one\n"
                       "ARG A=default B C=$TAG\n"
                       "ARG TAG\n"
                       "ENV USE=\"$A|$B|${B-unset}|$C|$TAG\"\n"
                       "ARG A\n"
                       "RUN two\n";
    struct dockerfile *df = parse(text);
    assert_string_equal(df->from, "base");
    struct df_step *s = df->steps;
    assert_int_equal(df->nsteps, 8);
    assert_string_equal(s[1].key, "A");
    assert_string_equal(s[1].value, "default");
    assert_string_equal(s[2].key, "B");
    assert_null(s[2].value); /* declared, unset */
    assert_string_equal(s[2].text, "ARG B");
    /* Pre-FROM ARGs are not visible after FROM... */
    assert_string_equal(s[3].key, "C");
    assert_string_equal(s[3].value, "");
    /* ...until an ARG without a value brings them in. */
    assert_string_equal(s[4].key, "TAG");
    assert_string_equal(s[4].value, "base");
    assert_string_equal(s[5].value, "default||unset||base");
    /* Redeclared without a value: keeps the one it had. */
    assert_string_equal(s[6].value, "default");
    /* ARGs are build-time only. */
    assert_int_equal(list_len(df->envs), 1);
    dockerfile_free(df);

    /* Build args override defaults, pre-FROM ones too; their values are not substituted. */
    const char *ba[] = {"TAG=mytemplate", "A=from-cli", "B=$HOME", "UNUSED=", NULL};
    df = parse_args(text, ba);
    assert_string_equal(df->from, "mytemplate");
    s = df->steps;
    assert_string_equal(s[1].value, "from-cli");
    assert_string_equal(s[1].text, "ARG A=from-cli");
    assert_string_equal(s[2].value, "$HOME");
    assert_string_equal(s[2].text, "ARG B=\"\\$HOME\"");
    assert_string_equal(s[3].value, ""); /* C's default saw no TAG after FROM */
    assert_string_equal(s[4].value, "mytemplate");
    assert_string_equal(s[5].value, "from-cli|$HOME|$HOME||mytemplate");
    dockerfile_free(df);

    /* ENV wins over an ARG of the same name, in substitution and in the environment. */
    df = parse("FROM base\nARG V=arg\nENV V=env\nARG V=arg2\nENV W=$V\n");
    assert_string_equal(df->steps[2].value, "arg2");
    assert_string_equal(df->steps[3].value, "env");
    dockerfile_free(df);

    /* A pre-FROM ARG used only in FROM. */
    df = parse("ARG V=1\nARG IMG=/img/v$V.ext4\nFROM $IMG\nENV X=${V:-none}\n");
    assert_string_equal(df->from, "/img/v1.ext4");
    assert_string_equal(df->envs[0], "X=none");
    dockerfile_free(df);

    const char *undeclared[] = {"A=1", "NOPE=2", NULL};
    expect_err_args("FROM base\nARG A\n", undeclared, "build arg NOPE is not declared by any ARG");
    const char *malformed[] = {"NOEQUALS", NULL};
    expect_err_args("FROM base\nARG NOEQUALS\n", malformed, "build arg NOEQUALS is not NAME=VALUE");
    const char *noname[] = {"=x", NULL};
    expect_err_args("FROM base\n", noname, "is not NAME=VALUE");
    const char *twice[] = {"A=1", "A=2", NULL};
    expect_err_args("FROM base\nARG A\n", twice, "build arg A given twice");
    expect_err("FROM base\nARG\n", "line 2: ARG needs a name");
    expect_err("FROM base\nARG =x\n", "ARG: empty name");
    expect_err("ARG X=${X:?needed}\nFROM base\n", "line 1: X: needed");
}

/* ---- WORKDIR, USER ---- */

static void test_workdir_user(void **state)
{
    struct dockerfile *df = parse("FROM base\n"
                                  "WORKDIR app\n"
                                  "WORKDIR src/\n"
                                  "WORKDIR ../lib/./x//\n"
                                  "WORKDIR ../../../../..\n"
                                  "WORKDIR /opt/my dir\n"
                                  "WORKDIR .\n"
                                  "WORKDIR //a/../b\n"
                                  "USER 1000\n"
                                  "USER user:staff\n");
    const char *want[] = {"/app",        "/app/src",    "/app/lib/x", "/",
                          "/opt/my dir", "/opt/my dir", "/b"};
    for (size_t i = 0; i < 7; i++) {
        assert_int_equal(df->steps[i].op, DF_WORKDIR);
        assert_string_equal(df->steps[i].path, want[i]);
    }
    assert_string_equal(df->steps[4].text, "WORKDIR \"/opt/my dir\"");
    assert_string_equal(df->workdir, "/b");
    assert_string_equal(df->steps[7].user, "1000");
    assert_string_equal(df->steps[8].user, "user:staff");
    assert_string_equal(df->user, "user:staff");
    dockerfile_free(df);

    expect_err("FROM base\nWORKDIR\n", "line 2: WORKDIR needs an argument");
    expect_err("FROM base\nWORKDIR $NOPE\n", "WORKDIR is empty after variable substitution");
    expect_err("FROM base\nUSER\n", "USER needs an argument");
    expect_err("FROM base\nUSER a b\n", "USER: bad user");
    expect_err("FROM base\nUSER :g\n", "USER: bad user");
    expect_err("FROM base\nUSER u:\n", "USER: bad user");
    expect_err("FROM base\nUSER u:g:h\n", "USER: bad user");
}

/* ---- dockerfile_step_env ---- */

static void test_step_env(void **state)
{
    struct dockerfile *df = parse("FROM base\n"
                                  "RUN zero\n"
                                  "ARG A=a1 N\n"
                                  "ENV E=e1\n"
                                  "RUN four\n"
                                  "ENV A=env\n"
                                  "ARG E=arg\n"
                                  "RUN seven\n");
    char **e = dockerfile_step_env(df, 0);
    assert_non_null(e);
    assert_null(e[0]);
    dockerfile_free_list(e);

    e = dockerfile_step_env(df, 4);
    assert_int_equal(df->steps[4].op, DF_RUN);
    assert_int_equal(list_len(e), 2);
    assert_string_equal(e[0], "A=a1"); /* N is declared but unset: not in the environment */
    assert_string_equal(e[1], "E=e1");
    dockerfile_free_list(e);

    e = dockerfile_step_env(df, 7);
    assert_int_equal(list_len(e), 2);
    assert_string_equal(e[0], "A=env"); /* ENV wins over ARG */
    assert_string_equal(e[1], "E=e1");
    dockerfile_free_list(e);

    e = dockerfile_step_env(df, 1000); /* clamped: after the last step */
    assert_int_equal(list_len(e), 2);
    dockerfile_free_list(e);
    /* The template's own environment has no ARGs. */
    assert_int_equal(list_len(df->envs), 2);
    assert_string_equal(df->envs[0], "E=e1");
    assert_string_equal(df->envs[1], "A=env");
    dockerfile_free(df);
    dockerfile_free_list(NULL);
}

/* ---- labels, CMD, ready checks ---- */

static void test_start_ready(void **state)
{
    struct dockerfile *df = parse("FROM base\n"
                                  "ENV PORT=8000\n"
                                  "LABEL sbx.start=\"python3 -m http.server $PORT\" "
                                  "sbx.ready=port:$PORT other=\"x y\"\n"
                                  "LABEL legacy form value\n");
    assert_string_equal(df->start_cmd, "python3 -m http.server 8000");
    assert_int_equal(df->start_line, 3);
    assert_int_equal(df->ready, DF_READY_PORT);
    assert_int_equal(df->ready_port, 8000);
    assert_null(df->ready_arg);
    assert_int_equal(df->nsteps, 3); /* ENV and two labels: the sbx.* labels are no steps */
    assert_int_equal(df->steps[1].op, DF_LABEL);
    assert_string_equal(df->steps[1].key, "other");
    assert_string_equal(df->steps[1].value, "x y");
    assert_string_equal(df->steps[1].text, "LABEL other=\"x y\"");
    assert_string_equal(df->steps[2].key, "legacy");
    assert_string_equal(df->steps[2].value, "form value");
    dockerfile_free(df);

    df = parse("FROM base\nLABEL sbx.ready=\"cmd:curl -sf localhost:80/ready\"\n"
               "CMD [\"node\", \"server.js\", \"a b\", \"it's\", \"A=1\", \"\", \"$X\"]\n");
    assert_int_equal(df->ready, DF_READY_CMD);
    assert_string_equal(df->ready_arg, "curl -sf localhost:80/ready");
    assert_string_equal(df->start_cmd, "node server.js 'a b' 'it'\\''s' 'A=1' '' '$X'");
    assert_int_equal(df->start_line, 3);
    assert_int_equal(df->nsteps, 0);
    dockerfile_free(df);

    df = parse("FROM base\nLABEL sbx.ready=file:/tmp/ready\nCMD echo $HOME && sleep inf\n");
    assert_int_equal(df->ready, DF_READY_FILE);
    assert_string_equal(df->ready_arg, "/tmp/ready");
    assert_string_equal(df->start_cmd, "echo $HOME && sleep inf"); /* not substituted */
    dockerfile_free(df);

    df = parse("FROM base\nLABEL sbx.ready=delay:1500\n");
    assert_int_equal(df->ready, DF_READY_DELAY);
    assert_int_equal(df->ready_ms, 1500);
    assert_null(df->start_cmd);
    dockerfile_free(df);
    df = parse("FROM base\nLABEL sbx.ready=delay:0 sbx.start=x\n");
    assert_int_equal(df->ready, DF_READY_DELAY);
    assert_int_equal(df->ready_ms, 0);
    dockerfile_free(df);
    df = parse("FROM base\nLABEL sbx.ready=port:65535\n");
    assert_int_equal(df->ready_port, 65535);
    dockerfile_free(df);

    const char *bad_ready[] = {"port:0",   "port:65536", "port:80x", "port:",  "port:-1",
                               "cmd:",     "file:rel",   "file:",    "delay:", "delay:600001",
                               "delay:1s", "tcp:80",     "",         "PORT:80"};
    for (size_t i = 0; i < sizeof(bad_ready) / sizeof(bad_ready[0]); i++) {
        char text[128];
        snprintf(text, sizeof(text), "FROM base\nLABEL sbx.ready=\"%s\"\n", bad_ready[i]);
        expect_err(text, "line 2: LABEL sbx.ready must be cmd:<command>, port:<1-65535>");
    }
    expect_err("FROM base\nCMD a\nLABEL sbx.start=b\n", "line 3: both CMD and LABEL sbx.start");
    expect_err("FROM base\nLABEL sbx.start=b\nCMD a\n", "line 3: both CMD and LABEL sbx.start");
    expect_err("FROM base\nCMD a\nCMD b\n", "line 3: CMD given twice");
    expect_err("FROM base\nLABEL sbx.start=a sbx.start=b\n", "LABEL sbx.start given twice");
    expect_err("FROM base\nLABEL sbx.start=\n", "LABEL sbx.start is empty");
    expect_err("FROM base\nLABEL sbx.ready=delay:1\nLABEL sbx.ready=delay:2\n",
               "line 3: LABEL sbx.ready given twice");
    expect_err("FROM base\nLABEL sbx.strat=x\n", "line 2: unknown label sbx.strat");
    expect_err("FROM base\nCMD\n", "CMD needs a command");
    expect_err("FROM base\nCMD []\n", "CMD []: the exec form needs a program");
    expect_err("FROM base\nCMD --help\n", "CMD --help is not supported");
    expect_err("FROM base\nLABEL\n", "LABEL needs a name and a value");
    expect_err("FROM base\nLABEL a=1 b\n", "LABEL: no '=' in b");
}

/* ---- structure and unsupported instructions ---- */

static void test_structure_errors(void **state)
{
    expect_err("", "no FROM instruction");
    expect_err("# only a comment\n\n", "no FROM instruction");
    expect_err("ARG A=1\n", "no FROM instruction");
    expect_err("RUN x\nFROM base\n", "line 1: RUN before FROM (only ARG may come before FROM)");
    expect_err("ENV A=1\nFROM base\n", "line 1: ENV before FROM");
    expect_err("FROM base\nRUN x\nFROM base\n",
               "line 3: multi-stage builds are not supported (a second FROM)");
    expect_err("FROM base AS build\n", "line 1: multi-stage builds are not supported (FROM ... AS");
    expect_err("FROM base as build\n", "multi-stage builds are not supported");
    expect_err("FROM a b\n", "FROM takes one argument");
    expect_err("FROM base AS x y\n", "FROM takes one argument");
    expect_err("FROM\n", "line 1: FROM needs an argument");
    expect_err("FROM --platform=linux/amd64 base\n", "FROM --platform is not supported");
    expect_err("ARG X\nFROM $X\n", "FROM is empty after variable substitution");
    expect_err("FROM base\nENTRYPOINT [\"x\"]\n",
               "line 2: ENTRYPOINT is not supported; set the start command with CMD or LABEL "
               "sbx.start");
    expect_err("FROM base\nexpose 80\n", "line 2: EXPOSE is not supported; every guest port is "
                                         "reachable without it: sbx_get_host()");
    expect_err("FROM base\nVOLUME /data\n", "line 2: VOLUME is not supported");
    expect_err("FROM base\nHEALTHCHECK CMD true\n", "HEALTHCHECK is not supported; use LABEL "
                                                    "sbx.ready");
    expect_err("FROM base\nONBUILD RUN x\n", "line 2: ONBUILD is not supported");
    expect_err("FROM base\nSTOPSIGNAL SIGTERM\n", "line 2: STOPSIGNAL is not supported");
    expect_err("FROM base\nSHELL [\"bash\", \"-c\"]\n", "SHELL is not supported; RUN uses /bin/sh");
    expect_err("FROM base\nMAINTAINER me\n", "MAINTAINER is not supported; use LABEL");
    expect_err("ENTRYPOINT x\nFROM base\n", "line 1: ENTRYPOINT is not supported");
    expect_err("FROM base\nFROBNICATE x\n", "line 2: unknown instruction FROBNICATE");
    expect_err("FROM base\nAVERYLONGINSTRUCTIONNAME x\n", "unknown instruction AVERYLONG");
    expect_err("FROM base\nRUN\x01 x\n", "unknown instruction RUN?");
    expect_err("# escape=`\nFROM base\n", "line 1: the escape parser directive is not supported");
    expect_err("# syntax=x\n#  ESCAPE = `\nFROM base\n", "line 2: the escape parser directive");

    /* After the directives, "# escape=" is an ordinary comment. */
    struct dockerfile *df = parse("# a comment\n# escape=`\nFROM base\n");
    dockerfile_free(df);
    df = parse("\n# escape=`\nFROM base\n");
    dockerfile_free(df);

    /* NUL bytes are refused with their line. */
    char err[128];
    struct dockerfile *out = NULL;
    errno = 0;
    assert_int_equal(dockerfile_parse("FROM base\nRUN a\0b\n", 18, NULL, &out, err, sizeof(err)),
                     -1);
    assert_int_equal(errno, EINVAL);
    assert_null(out);
    assert_string_equal(err, "line 2: NUL byte in the Dockerfile");

    /* The text need not be NUL-terminated: only len bytes are read. */
    char text[] = {'F', 'R', 'O', 'M', ' ', 'b', 'a', 's', 'e', '\n', 'R', 'U', 'N', ' ', 'x'};
    assert_int_equal(dockerfile_parse(text, sizeof(text) - 2, NULL, &out, err, sizeof(err)), -1);
    assert_string_equal(err, "line 2: RUN needs a command");
    assert_int_equal(dockerfile_parse(text, sizeof(text), NULL, &out, err, sizeof(err)), 0);
    assert_string_equal(out->steps[0].cmd, "x");
    dockerfile_free(out);

    /* err may be NULL or tiny; the message is truncated, never overrun. */
    out = NULL;
    assert_int_equal(dockerfile_parse("RUN x", 5, NULL, &out, NULL, 0), -1);
    assert_null(out);
    char tiny[8];
    memset(tiny, 'X', sizeof(tiny));
    assert_int_equal(dockerfile_parse("RUN x", 5, NULL, &out, tiny, 5), -1);
    assert_string_equal(tiny, "line");
    assert_int_equal(tiny[5], 'X');
    assert_int_equal(dockerfile_parse("RUN x", 5, NULL, &out, tiny, 1), -1);
    assert_string_equal(tiny, "");
    assert_int_equal(dockerfile_parse(NULL, 5, NULL, &out, err, sizeof(err)), -1);
    assert_int_equal(dockerfile_parse("FROM x", 6, NULL, NULL, err, sizeof(err)), -1);
}

/* ---- caps ---- */

static char *repeat(const char *head, const char *unit, size_t n, const char *tail)
{
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
    char *s = malloc(hl + ul * n + tl + 1);
    assert_non_null(s);
    memcpy(s, head, hl);
    for (size_t i = 0; i < n; i++)
        memcpy(s + hl + i * ul, unit, ul);
    memcpy(s + hl + ul * n, tail, tl + 1);
    return s;
}

static void test_caps(void **state)
{
    /* File size: exactly 1 MiB parses, one byte more does not. */
    size_t max = DOCKERFILE_MAX_SIZE;
    char *big = malloc(max + 1);
    assert_non_null(big);
    memset(big, '\n', max + 1);
    memcpy(big, "FROM base\n#", 11);
    struct dockerfile *df = NULL;
    char err[256];
    assert_int_equal(dockerfile_parse(big, max, NULL, &df, err, sizeof(err)), 0);
    dockerfile_free(df);
    errno = 0;
    assert_int_equal(dockerfile_parse(big, max + 1, NULL, &df, err, sizeof(err)), -1);
    assert_int_equal(errno, EINVAL);
    assert_string_equal(err, "the Dockerfile is larger than 1048576 bytes");
    free(big);

    /* Instructions: 1000 (FROM included) parse, 1001 do not. */
    char *s = repeat("FROM base\n", "RUN x\n", DOCKERFILE_MAX_INSTR - 1, "");
    df = parse(s);
    assert_int_equal(df->nsteps, DOCKERFILE_MAX_INSTR - 1);
    dockerfile_free(df);
    free(s);
    s = repeat("FROM base\n", "RUN x\n", DOCKERFILE_MAX_INSTR, "");
    expect_err(s, "line 1001: more than 1000 instructions");
    free(s);

    /* Steps: ENV/ARG/LABEL pairs each make one, so a few lines can hold many. */
    s = repeat("FROM base\nLABEL ", "a=b ", DOCKERFILE_MAX_STEPS, "\n");
    df = parse(s);
    assert_int_equal(df->nsteps, DOCKERFILE_MAX_STEPS);
    dockerfile_free(df);
    free(s);
    s = repeat("FROM base\nENV ", "A=b ", DOCKERFILE_MAX_STEPS + 1, "\n");
    expect_err(s, "line 2: more than 4096 steps");
    free(s);

    /* A logical line: 64 KiB parse, more do not, whether on one line or continued. */
    s = repeat("FROM base\nRUN ", "x", DOCKERFILE_MAX_LINE - 4, "\n");
    df = parse(s);
    assert_int_equal(strlen(df->steps[0].cmd), DOCKERFILE_MAX_LINE - 4);
    dockerfile_free(df);
    free(s);
    s = repeat("FROM base\nRUN ", "x", DOCKERFILE_MAX_LINE - 3, "\n");
    expect_err(s, "line 2: instruction longer than 65536 bytes");
    free(s);
    s = repeat("FROM base\nRUN \\\n", "xxxxxxx \\\n", DOCKERFILE_MAX_LINE / 8, "\n");
    expect_err(s, "line 2: instruction longer than 65536 bytes");
    free(s);

    /* ENV/ARG names: 256 distinct ones (pre-FROM ARGs included) parse, 257 do not. */
    struct {
        char *p;
        size_t n, cap;
    } b = {0};
    b.cap = 1 << 16;
    b.p = malloc(b.cap);
    assert_non_null(b.p);
    b.n = (size_t)sprintf(b.p, "ARG M0\nFROM base\n");
    for (int i = 1; i < DOCKERFILE_MAX_NAMES; i++)
        b.n += (size_t)sprintf(b.p + b.n, "%s V%d=%d\n", i % 2 ? "ENV" : "ARG", i, i);
    b.n += (size_t)sprintf(b.p + b.n, "ENV V1=again\nARG V2\n");
    df = parse(b.p);
    assert_int_equal(list_len(df->envs), DOCKERFILE_MAX_NAMES / 2);
    dockerfile_free(df);
    b.n += (size_t)sprintf(b.p + b.n, "ENV ONE_MORE=x\n");
    expect_err(b.p, "more than 256 ENV/ARG names");
    free(b.p);
    const char *many[DOCKERFILE_MAX_NAMES + 2];
    for (int i = 0; i < DOCKERFILE_MAX_NAMES + 1; i++)
        many[i] = "A=1";
    many[DOCKERFILE_MAX_NAMES + 1] = NULL;
    expect_err_args("FROM base\nARG A\n", many, "more than 256 build args");

    /* Substitution cannot blow up: 64 KiB of "$A" with a 32 KiB A would be 1 GiB. */
    char *val = repeat("", "y", 32768, "");
    char *refs = repeat("", "$A", 20000, "");
    size_t tl = strlen(val) + strlen(refs) + 64;
    char *t = malloc(tl);
    assert_non_null(t);
    snprintf(t, tl, "FROM base\nENV A=%s\nENV B=%s\n", val, refs);
    expect_err(t, "line 3: variable substitution produces more than 4194304 bytes");
    /* ...nor through words that are dropped again. */
    free(refs);
    refs = repeat("ENV B=${A:+", "$A$A$A$A$A$A$A$A", 2000, "}\n");
    snprintf(t, tl, "FROM base\nENV A=%s\n", val);
    char *t2 = malloc(strlen(t) + strlen(refs) + 1);
    assert_non_null(t2);
    strcpy(t2, t);
    strcat(t2, refs);
    expect_err(t2, "variable substitution produces more than");
    free(t2);
    free(t);
    free(refs);
    free(val);

    /* Nesting of substitutions and of JSON values is bounded, without recursion blowing up. */
    s = repeat("FROM base\nENV A=", "${U:-", 31, "x");
    char *s2 = repeat(s, "}", 31, "\n");
    df = parse(s2);
    assert_string_equal(df->envs[0], "A=x");
    dockerfile_free(df);
    free(s);
    free(s2);
    s = repeat("FROM base\nENV A=", "${U:-", 5000, "x\n");
    expect_err(s, "variable substitution nested more than 32 deep");
    free(s);
    s = repeat("FROM base\nRUN [\"a\", ", "[", 20000, "\n");
    df = parse(s); /* not JSON: shell form */
    assert_non_null(df->steps[0].cmd);
    dockerfile_free(df);
    free(s);
}

/* The canonical text reads back as the same step. */
static void test_text_round_trip(void **state)
{
    const char *text = "FROM base\n"
                       "ARG V=\"a b\"\n"
                       "ENV X=\"q\\\"'\\\\$ \" Y=plain E=\n"
                       "WORKDIR /my dir/${V}\n"
                       "USER u:g\n"
                       "COPY --chown=u:g --chmod=0700 [\"odd $ name\", \"--dash\", \"rel/\"]\n"
                       "ADD a.tar \"/t t\"\n"
                       "LABEL \"k\"=\"v\\\\\" \n"
                       "RUN [\"sh\", \"-c\", \"echo \\\"$X\\\"\\n\"]\n"
                       "RUN echo \"$X\"\n";
    struct dockerfile *a = parse(text);
    size_t n = 16;
    for (size_t i = 0; i < a->nsteps; i++)
        n += strlen(a->steps[i].text) + 1;
    char *again = malloc(n);
    assert_non_null(again);
    strcpy(again, "FROM base\n");
    for (size_t i = 0; i < a->nsteps; i++) {
        strcat(again, a->steps[i].text);
        strcat(again, "\n");
    }
    struct dockerfile *b = parse(again);
    assert_int_equal(a->nsteps, b->nsteps);
    for (size_t i = 0; i < a->nsteps; i++) {
        struct df_step *x = &a->steps[i], *y = &b->steps[i];
        assert_int_equal(x->op, y->op);
        assert_string_equal(x->text, y->text);
        if (x->value || y->value)
            assert_string_equal(x->value, y->value);
        if (x->dst)
            assert_string_equal(x->dst, y->dst);
        for (size_t k = 0; k < x->nsrcs; k++)
            assert_string_equal(x->srcs[k], y->srcs[k]);
    }
    assert_string_equal(a->steps[1].value, "q\"'\\$ ");
    assert_string_equal(a->steps[4].path, "/my dir/a b");
    assert_string_equal(a->steps[6].srcs[0], "odd $ name");
    assert_string_equal(a->steps[6].srcs[1], "--dash");
    assert_string_equal(a->steps[6].dst, "/my dir/a b/rel/");
    assert_string_equal(
        a->steps[6].text,
        "COPY --chown=u:g --chmod=0700 \"odd \\$ name\" \"--dash\" \"/my dir/a b/rel/\"");
    assert_string_equal(a->steps[9].argv[2], "echo \"$X\"\n");
    free(again);
    dockerfile_free(a);
    dockerfile_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_instructions),
        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_lines_numbers),
        cmocka_unit_test(test_run),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_substitution),
        cmocka_unit_test(test_arg),
        cmocka_unit_test(test_workdir_user),
        cmocka_unit_test(test_step_env),
        cmocka_unit_test(test_start_ready),
        cmocka_unit_test(test_structure_errors),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_text_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
