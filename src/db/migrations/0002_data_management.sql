CREATE TABLE "core_schema"."perspective_versions" (
	"perspective_id" uuid NOT NULL,
	"revision" integer NOT NULL,
	"version" text NOT NULL,
	"definition" jsonb NOT NULL,
	"definition_hash" text NOT NULL,
	"source_path" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "perspective_versions_perspective_id_revision_pk" PRIMARY KEY("perspective_id","revision")
);
--> statement-breakpoint
ALTER TABLE "job_queue"."job_archives" DROP CONSTRAINT "job_archives_image_id_images_id_fk";
--> statement-breakpoint
ALTER TABLE "job_queue"."job_items" DROP CONSTRAINT "job_items_image_id_images_id_fk";
--> statement-breakpoint
ALTER TABLE "job_queue"."job_archives" ALTER COLUMN "image_id" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "job_queue"."job_items" ALTER COLUMN "image_id" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "core_schema"."captions" ADD COLUMN "perspective_revision" integer;--> statement-breakpoint
ALTER TABLE "core_schema"."perspectives" ADD COLUMN "revision" integer DEFAULT 1 NOT NULL;--> statement-breakpoint
ALTER TABLE "core_schema"."perspective_versions" ADD CONSTRAINT "perspective_versions_perspective_id_perspectives_id_fk" FOREIGN KEY ("perspective_id") REFERENCES "core_schema"."perspectives"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_queue"."job_archives" ADD CONSTRAINT "job_archives_image_id_images_id_fk" FOREIGN KEY ("image_id") REFERENCES "core_schema"."images"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_queue"."job_items" ADD CONSTRAINT "job_items_image_id_images_id_fk" FOREIGN KEY ("image_id") REFERENCES "core_schema"."images"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "captions_created_idx" ON "core_schema"."captions" USING btree ("created_at","id");