/*
 * exvit's JPEG decoder: a thin shim over libjpeg-turbo's libjpeg API, so that exvit decodes
 * exactly as Pillow does (same library, same defaults: accurate integer IDCT, "fancy" chroma
 * upsampling), and so that the loader can decode only a crop window (jpeg_crop_scanline,
 * jpeg_skip_scanlines) at a reduced DCT scale (scale_num / scale_denom).
 *
 * libjpeg reports fatal errors through error_exit, which must not return; this file catches
 * them with setjmp/longjmp so that no longjmp ever crosses a Rust frame. Each entry point
 * sets its own jump target and returns 0 on success and a negative code on failure, with the
 * library's message in the result struct.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#define EXVIT_MSG 200

typedef struct {
    int width, height;         /* the image, from the header */
    int components;            /* components in the file */
    int color_space;           /* 1 gray, 2 RGB, 3 YCbCr, 4 CMYK, 5 YCCK, 0 unknown */
    int progressive;           /* 1 for a progressive (SOF2) file */
    int out_width, out_height; /* the whole image at the requested scale */
    int x0, y0, w, h;          /* the window written to `out`, in scaled pixels */
    int out_components;        /* 3 (RGB) or 4 (CMYK, as stored) */
    int warnings;              /* libjpeg warnings (corrupt data it could read through) */
    int truncated;             /* the data ended before the image did */
    size_t needed;             /* bytes the window needs, when `out` was too small */
    char message[EXVIT_MSG];   /* the error, or the first warning */
} exvit_jpeg_result;

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    exvit_jpeg_result *res;
} exvit_error;

static void exvit_error_exit(j_common_ptr cinfo) {
    exvit_error *err = (exvit_error *)cinfo->err;
    char buf[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, buf);
    snprintf(err->res->message, EXVIT_MSG, "%s", buf);
    longjmp(err->jump, 1);
}

static void exvit_emit_message(j_common_ptr cinfo, int level) {
    exvit_error *err = (exvit_error *)cinfo->err;
    if (level >= 0) return; /* trace messages */
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) err->res->truncated = 1;
    if (err->res->warnings == 0) {
        char buf[JMSG_LENGTH_MAX];
        (*cinfo->err->format_message)(cinfo, buf);
        snprintf(err->res->message, EXVIT_MSG, "%s", buf);
    }
    err->res->warnings++;
}

static int map_color_space(J_COLOR_SPACE cs) {
    switch (cs) {
    case JCS_GRAYSCALE: return 1;
    case JCS_RGB: return 2;
    case JCS_YCbCr: return 3;
    case JCS_CMYK: return 4;
    case JCS_YCCK: return 5;
    default: return 0;
    }
}

/* Shared setup: error manager, memory source, header. Returns 0 or -1 (message set). */
#define EXVIT_BEGIN(cinfo, err, res, buf, len)                               \
    memset(res, 0, sizeof(*res));                                          \
    cinfo.err = jpeg_std_error(&err.pub);                                  \
    err.pub.error_exit = exvit_error_exit;                                 \
    err.pub.emit_message = exvit_emit_message;                             \
    err.res = res;                                                         \
    if (setjmp(err.jump)) {                                                \
        jpeg_destroy_decompress(&cinfo);                                   \
        return -1;                                                         \
    }                                                                      \
    jpeg_create_decompress(&cinfo);                                        \
    jpeg_mem_src(&cinfo, buf, len);                                        \
    jpeg_read_header(&cinfo, TRUE);                                        \
    res->width = (int)cinfo.image_width;                                   \
    res->height = (int)cinfo.image_height;                                 \
    res->components = cinfo.num_components;                                \
    res->color_space = map_color_space(cinfo.jpeg_color_space);            \
    res->progressive = cinfo.progressive_mode ? 1 : 0;

/* Reads the header only. */
int exvit_jpeg_header(const unsigned char *buf, unsigned long len, exvit_jpeg_result *res) {
    struct jpeg_decompress_struct cinfo;
    exvit_error err;
    EXVIT_BEGIN(cinfo, err, res, buf, len)
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

/* The body of exvit_jpeg_decode, in its own frame: it changes its arguments, which must not
 * live in the frame that called setjmp. Errors longjmp back to that frame. */
static int exvit_decode_body(struct jpeg_decompress_struct *cinfo, unsigned long long max_pixels, int scale_denom,
                             int fast, int x, int y, int w, int h, unsigned char *out, size_t out_cap,
                             exvit_jpeg_result *res) {
    JDIMENSION xoff, width, row;
    size_t stride;
    if ((unsigned long long)cinfo->image_width * cinfo->image_height > max_pixels) return -3;
    if (cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK) {
        cinfo->out_color_space = JCS_CMYK;
    } else {
        cinfo->out_color_space = JCS_RGB;
    }
    cinfo->scale_num = 1;
    cinfo->scale_denom = (unsigned int)(scale_denom > 0 ? scale_denom : 1);
    /* Pillow's settings, unless the caller asks for speed over Pillow's exact pixels. */
    cinfo->dct_method = fast ? JDCT_IFAST : JDCT_ISLOW;
    cinfo->do_fancy_upsampling = fast ? FALSE : TRUE;
    jpeg_start_decompress(cinfo);
    res->out_width = (int)cinfo->output_width;
    res->out_height = (int)cinfo->output_height;
    res->out_components = cinfo->output_components;
    if (w <= 0 || h <= 0) {
        x = 0;
        y = 0;
        w = (int)cinfo->output_width;
        h = (int)cinfo->output_height;
    }
    if (x < 0 || y < 0 || (JDIMENSION)x + (JDIMENSION)w > cinfo->output_width ||
        (JDIMENSION)y + (JDIMENSION)h > cinfo->output_height) {
        snprintf(res->message, EXVIT_MSG, "window %dx%d at (%d, %d) is outside the %ux%u image", w, h, x, y,
                 cinfo->output_width, cinfo->output_height);
        return -1;
    }
    xoff = (JDIMENSION)x;
    width = (JDIMENSION)w;
    if (xoff != 0 || width != cinfo->output_width) jpeg_crop_scanline(cinfo, &xoff, &width);
    stride = (size_t)width * (size_t)cinfo->output_components;
    res->x0 = (int)xoff;
    res->y0 = y;
    res->w = (int)width;
    res->h = h;
    res->needed = stride * (size_t)h;
    if (res->needed > out_cap) return -2;
    if (y > 0) jpeg_skip_scanlines(cinfo, (JDIMENSION)y);
    for (row = 0; row < (JDIMENSION)h;) {
        JSAMPROW rows[16];
        JDIMENSION i, n = (JDIMENSION)h - row;
        if (n > 16) n = 16;
        for (i = 0; i < n; i++) rows[i] = out + (size_t)(row + i) * stride;
        row += jpeg_read_scanlines(cinfo, rows, n);
    }
    if (cinfo->output_scanline == cinfo->output_height) {
        jpeg_finish_decompress(cinfo);
    } else {
        jpeg_abort_decompress(cinfo);
    }
    return 0;
}

/*
 * Decodes the window (x, y, w, h) of the image scaled by 1/scale_denom (1, 2, 4 or 8) (with
 * the fast integer IDCT and plain chroma upsampling when `fast`, else Pillow's settings) into
 * `out`, rows packed (stride = res->w * res->out_components). w <= 0 means the whole image.
 * libjpeg can only start a row at an iMCU boundary, so res->x0 may be left of x and res->w
 * wider than w: the caller cuts the rest. Returns 0, -1 (error, message set), -2 (the window
 * needs res->needed bytes, more than out_cap) or -3 (the header claims more than max_pixels).
 */
int exvit_jpeg_decode(const unsigned char *buf, unsigned long len, unsigned long long max_pixels,
                      int scale_denom, int fast, int x, int y, int w, int h, unsigned char *out, size_t out_cap,
                      exvit_jpeg_result *res) {
    struct jpeg_decompress_struct cinfo;
    exvit_error err;
    int rc;
    EXVIT_BEGIN(cinfo, err, res, buf, len)
    rc = exvit_decode_body(&cinfo, max_pixels, scale_denom, fast, x, y, w, h, out, out_cap, res);
    jpeg_destroy_decompress(&cinfo);
    return rc;
}
