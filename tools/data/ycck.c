/* Writes a YCCK JPEG (Adobe, transform 2), which Pillow cannot write: reads raw CMYK bytes
 * (width * height * 4, as Pillow's "CMYK;I" Adobe-inverted layout would be stored) and
 * compresses them with libjpeg, colour space YCCK. Built and run by make_fixtures.py:
 *   gcc -O2 tools/data/ycck.c -ljpeg -o /tmp/ycck && /tmp/ycck W H in.cmyk out.jpg
 */
#include <stdio.h>
#include <stdlib.h>
#include <jpeglib.h>

int main(int argc, char **argv) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    int w, h, y;
    unsigned char *px;
    FILE *in, *out;
    if (argc != 5) {
        fprintf(stderr, "usage: ycck W H in.cmyk out.jpg\n");
        return 2;
    }
    w = atoi(argv[1]);
    h = atoi(argv[2]);
    px = malloc((size_t)w * h * 4);
    in = fopen(argv[3], "rb");
    if (!in || fread(px, 4, (size_t)w * h, in) != (size_t)w * h) return 1;
    fclose(in);
    out = fopen(argv[4], "wb");
    if (!out) return 1;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, out);
    c.image_width = w;
    c.image_height = h;
    c.input_components = 4;
    c.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&c);
    jpeg_set_colorspace(&c, JCS_YCCK);
    jpeg_set_quality(&c, 92, TRUE);
    jpeg_start_compress(&c, TRUE);
    for (y = 0; y < h; y++) {
        JSAMPROW row = px + (size_t)y * w * 4;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(out);
    free(px);
    return 0;
}
