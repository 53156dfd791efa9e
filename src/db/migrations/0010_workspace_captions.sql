CREATE TABLE "core_schema"."caption_files" (
	"path" text PRIMARY KEY NOT NULL,
	"size_bytes" bigint NOT NULL,
	"file_mtime" timestamp with time zone NOT NULL,
	"imported_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "core_schema"."captions" ADD COLUMN "import_key" text;--> statement-breakpoint
ALTER TABLE "core_schema"."captions" ADD COLUMN "export_pending" boolean DEFAULT false NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX "captions_import_key_key" ON "core_schema"."captions" USING btree ("import_key") WHERE import_key is not null;--> statement-breakpoint
CREATE INDEX "captions_export_pending_idx" ON "core_schema"."captions" USING btree ("created_at","id") WHERE export_pending;