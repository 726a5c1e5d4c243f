package thumbnail

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Image is an image file to upload: its file name and bytes.
type Image struct {
	Name string
	Data []byte
}

// Samples draws a few images of assorted sizes, shapes and formats with
// image/draw, so that the example needs no files: landscape, portrait,
// panorama, square, and one small enough to be left as it is. They are
// drawn once; callers must not change them.
func Samples() ([]Image, error) { return samples() }

var samples = sync.OnceValues(drawSamples)

func drawSamples() ([]Image, error) {
	specs := []struct {
		name string
		w, h int
		draw func(draw.Image)
	}{
		{"sunset.png", 640, 400, sunset},
		{"flag.jpg", 480, 320, flag},
		{"panorama.png", 1280, 160, checker},
		{"tower.jpg", 180, 600, sunset},
		{"tiles.png", 400, 400, checker},
		{"icon.png", 96, 96, flag},
	}
	out := make([]Image, 0, len(specs))
	for _, s := range specs {
		img := image.NewRGBA(image.Rect(0, 0, s.w, s.h))
		s.draw(img)
		var buf bytes.Buffer
		var err error
		if strings.HasSuffix(s.name, ".jpg") {
			err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
		} else {
			err = png.Encode(&buf, img)
		}
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", s.name, err)
		}
		out = append(out, Image{Name: s.name, Data: buf.Bytes()})
	}
	return out, nil
}

// sunset: a vertical gradient from orange to purple with a sun on it.
func sunset(dst draw.Image) {
	b := dst.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		t := float64(y-b.Min.Y) / float64(max(b.Dy()-1, 1))
		c := color.RGBA{R: uint8(250 - 150*t), G: uint8(160 - 130*t), B: uint8(60 + 120*t), A: 255}
		draw.Draw(dst, image.Rect(b.Min.X, y, b.Max.X, y+1), image.NewUniform(c), image.Point{}, draw.Src)
	}
	r := min(b.Dx(), b.Dy()) / 5
	sun := &circle{center: image.Pt(b.Min.X+b.Dx()/2, b.Min.Y+b.Dy()*3/5), r: r}
	draw.DrawMask(dst, b, image.NewUniform(color.RGBA{R: 255, G: 230, B: 120, A: 255}), image.Point{}, sun, b.Min, draw.Over)
}

// flag: three vertical stripes.
func flag(dst draw.Image) {
	b := dst.Bounds()
	colors := []color.RGBA{{0, 85, 164, 255}, {255, 255, 255, 255}, {239, 65, 53, 255}}
	for i, c := range colors {
		x0 := b.Min.X + b.Dx()*i/len(colors)
		x1 := b.Min.X + b.Dx()*(i+1)/len(colors)
		draw.Draw(dst, image.Rect(x0, b.Min.Y, x1, b.Max.Y), image.NewUniform(c), image.Point{}, draw.Src)
	}
}

// checker: a checkerboard of 50-pixel squares with a circle over it.
func checker(dst draw.Image) {
	b := dst.Bounds()
	const size = 50
	dark, light := image.NewUniform(color.RGBA{40, 60, 90, 255}), image.NewUniform(color.RGBA{200, 215, 230, 255})
	for y := b.Min.Y; y < b.Max.Y; y += size {
		for x := b.Min.X; x < b.Max.X; x += size {
			src := light
			if ((x-b.Min.X)/size+(y-b.Min.Y)/size)%2 == 0 {
				src = dark
			}
			draw.Draw(dst, image.Rect(x, y, x+size, y+size).Intersect(b), src, image.Point{}, draw.Src)
		}
	}
	disc := &circle{center: image.Pt(b.Min.X+b.Dx()/2, b.Min.Y+b.Dy()/2), r: min(b.Dx(), b.Dy()) / 3}
	draw.DrawMask(dst, b, image.NewUniform(color.RGBA{230, 120, 40, 200}), image.Point{}, disc, b.Min, draw.Over)
}

// circle is an alpha mask: opaque inside the circle, transparent outside.
type circle struct {
	center image.Point
	r      int
}

func (c *circle) ColorModel() color.Model { return color.AlphaModel }
func (c *circle) Bounds() image.Rectangle {
	return image.Rect(c.center.X-c.r, c.center.Y-c.r, c.center.X+c.r, c.center.Y+c.r)
}
func (c *circle) At(x, y int) color.Color {
	dx, dy := x-c.center.X, y-c.center.Y
	if dx*dx+dy*dy <= c.r*c.r {
		return color.Alpha{A: 255}
	}
	return color.Alpha{}
}

// Extensions are the file name endings FromDir picks up.
var Extensions = []string{".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}

// FromDir reads the image files (by extension) directly in dir.
func FromDir(dir string) ([]Image, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, e := range entries {
		if !e.Type().IsRegular() || !slices.Contains(Extensions, strings.ToLower(filepath.Ext(e.Name()))) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, Image{Name: e.Name(), Data: data})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no image files (%s)", dir, strings.Join(Extensions, " "))
	}
	return out, nil
}
